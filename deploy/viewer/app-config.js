/* OHIF v3 configuration for calcnode's local viewer (deploy/viewer/README.md).
 *
 * One DICOMweb source: the Orthanc DICOMweb plugin's root, /dicom-web, on the SAME origin as the
 * viewer. calcnode's viewer server (`calcnode viewer`) serves OHIF and forwards /dicom-web/ to
 * Orthanc, so the browser makes no cross-origin request (Orthanc 1.10 sends no CORS headers).
 * Behind another web server (nginx, Apache), proxy /dicom-web/ to Orthanc the same way.
 */
window.config = {
  name: 'calcnode local viewer',
  routerBasename: null,
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  // No "track these measurements?" and "load this SEG/SR?" questions: the results are the
  // point of opening the study.
  disableConfirmationPrompts: true,
  measurementTrackingMode: 'simplified',
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'Orthanc (local, DICOMweb)',
        name: 'orthanc',
        wadoUriRoot: window.location.origin + '/wado',
        qidoRoot: window.location.origin + '/dicom-web',
        wadoRoot: window.location.origin + '/dicom-web',
        qidoSupportsIncludeField: false,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: {
          enabled: true,
        },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
