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
  // OHIF draws a TID 1500 group's Image Region with its numbers only (count, score, threshold);
  // this adds the group's coded evaluations (calcnode's "Decision at operating point" and
  // "Analysis status") to the lines beside the outline, read from the SR OHIF has loaded.
  // It also rewrites the lines of the unitless numbers (UCUM "1", the DICOM unit of a count or a
  // score): OHIF 3.13 prints every number as "<value with 2 decimals> <unit code>", so a count of
  // 3 read "3.00 1", and a value of 0 lost its digits (" 1"). A count is shown as an integer,
  // another unitless number with 2 decimals, neither with the "1".
  customizationService: [
    {
      onBeforeSRAddMeasurement: {
        $set: ({ measurement, SeriesInstanceUID }) => {
          const wanted = ['Decision at operating point', 'Analysis status'];
          const asArray = s => (s ? (Array.isArray(s) ? s : [s]) : []);
          const sr = window.services?.displaySetService
            ?.getActiveDisplaySets()
            .find(ds => ds.Modality === 'SR' && ds.SeriesInstanceUID === SeriesInstanceUID);
          const report = asArray(sr?.instance?.ContentSequence);
          const groups = report
            .filter(item => asArray(item.ConceptNameCodeSequence)[0]?.CodeValue === '126010')
            .flatMap(item => asArray(item.ContentSequence));
          const group = groups.find(g =>
            asArray(g.ContentSequence).some(c => c.UID === measurement.TrackingUniqueIdentifier));
          const COUNTS = ['111038'];  // (111038, DCM, "Number of calcifications")
          for (const item of asArray(group?.ContentSequence)) {
            const concept = asArray(item.ConceptNameCodeSequence)[0];
            const measured = asArray(item.MeasuredValueSequence)[0];
            const unit = asArray(measured?.MeasurementUnitsCodeSequence)[0]?.CodeValue;
            const line = measurement.labels.find(l => l.label === concept?.CodeMeaning);
            if (item.ValueType === 'NUM' && unit === '1' && line && measured.NumericValue !== undefined) {
              const value = Number(measured.NumericValue);
              line.value = COUNTS.includes(concept.CodeValue) ? String(Math.round(value)) : value.toFixed(2);
            }
          }
          for (const item of asArray(group?.ContentSequence)) {
            const name = asArray(item.ConceptNameCodeSequence)[0]?.CodeMeaning;
            const shown = measurement.labels.some(line => line.label === name);  // called once per view
            if (item.ValueType === 'CODE' && wanted.includes(name) && !shown && measurement.labels.length < 5) {
              measurement.labels.push({ label: name, value: asArray(item.ConceptCodeSequence)[0]?.CodeMeaning });
            }
          }
          return measurement;
        },
      },
    },
  ],
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
        enableStudyLazyLoad: false,
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
