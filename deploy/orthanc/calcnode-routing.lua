-- Orthanc auto-routing for calcnode.
--
-- Forwards every stable mammography series (Modality MG) and every GSPS (PR) or SEG series of a
-- study that holds mammograms to the DicomModalities entry "calcnode". Never forwards what calcnode
-- itself produced (Manufacturer "calcnode"), so results stored back into Orthanc are not routed
-- back to the node. calcnode tolerates duplicates: a series forwarded twice is stored once and
-- analysed once.
--
-- Install: add this file to "LuaScripts" in the Orthanc configuration and declare the node in
-- "DicomModalities" (see orthanc-calcnode.json next to this file). "StableAge" (seconds without a
-- new instance before a series is "stable") defaults to 60 in Orthanc.

local CALCNODE = 'calcnode'       -- the name of the node in DicomModalities
local OWN_MANUFACTURER = 'calcnode'

local function studyHoldsMammograms(seriesId)
  local study = ParseJson(RestApiGet('/series/' .. seriesId .. '/study'))
  for _, child in ipairs(study['Series']) do
    local series = ParseJson(RestApiGet('/series/' .. child))
    if series['MainDicomTags']['Modality'] == 'MG' then
      return true
    end
  end
  return false
end

function OnStableSeries(seriesId, tags, metadata)
  local modality = tags['Modality'] or ''
  if modality ~= 'MG' and modality ~= 'PR' and modality ~= 'SEG' then
    return
  end
  local shared = ParseJson(RestApiGet('/series/' .. seriesId .. '/shared-tags?simplify'))
  if shared['Manufacturer'] == OWN_MANUFACTURER then
    return                                    -- calcnode's own results
  end
  if modality ~= 'MG' and not studyHoldsMammograms(seriesId) then
    return                                    -- an annotation of something else
  end
  print('calcnode routing: series ' .. seriesId .. ' (' .. modality .. ') -> ' .. CALCNODE)
  -- one association for the whole series, as an Orthanc job (visible, with its error, in /jobs)
  RestApiPost('/modalities/' .. CALCNODE .. '/store',
              DumpJson({ Resources = { seriesId }, Synchronous = false }, true))
end
