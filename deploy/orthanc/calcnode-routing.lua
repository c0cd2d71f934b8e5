-- Orthanc auto-routing for calcnode.
--
-- When a study that holds mammograms (Modality MG) becomes stable, forwards its MG series and its
-- GSPS (PR) and SEG series -- images and ROIs together -- to the DicomModalities entry "calcnode"
-- as ONE Orthanc job, which Orthanc sends over one association and releases at the end. The node
-- analyses the study 2 s after that release (assembly.association_grace_seconds), once, instead of
-- waiting for its own stable_seconds, and does not analyse the images first and again when the
-- ROIs come over another association.
--
-- Never forwards what calcnode itself produced (series whose Manufacturer is "calcnode": its SEG,
-- SRs and GSPS results), so results stored back into Orthanc are not routed back to the node.
--
-- A study becomes stable again when calcnode's results arrive, and when a radiologist stores a
-- ROI drawn later. The script remembers, in the study's metadata "CalcnodeForwarded", which
-- instances it forwarded: a study with nothing new to forward (only calcnode's results arrived)
-- is not sent again; a study with a new image or ROI is forwarded whole again (the node keeps
-- each instance once and re-analyses the study because its input set changed).
--
-- Install: add this file to "LuaScripts" in the Orthanc configuration, declare the node in
-- "DicomModalities" and the metadata in "UserMetadata" (see orthanc-calcnode.json next to this
-- file). "StableAge" (seconds without a new instance before a study is "stable") is a global
-- Orthanc setting, 60 by default; see orthanc-calcnode.json for the choice.

local CALCNODE = 'calcnode'             -- the name of the node in DicomModalities
local OWN_MANUFACTURER = 'calcnode'
local FORWARDED = 'CalcnodeForwarded'   -- study metadata (declared in UserMetadata)
local ROUTED = { MG = true, PR = true, SEG = true }

-- The series of the study to forward (MG, PR, SEG, not calcnode's) and their instances, or nil
-- when the study holds no mammogram.
local function seriesToForward(studyId)
  local series, instances, hasMammogram = {}, {}, false
  for _, s in ipairs(ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))) do
    local modality = s['MainDicomTags']['Modality'] or ''
    if ROUTED[modality] then
      local shared = ParseJson(RestApiGet('/series/' .. s['ID'] .. '/shared-tags?simplify'))
      if shared['Manufacturer'] ~= OWN_MANUFACTURER then  -- not calcnode's own results
        table.insert(series, s['ID'])
        for _, i in ipairs(s['Instances']) do
          table.insert(instances, i)
        end
        hasMammogram = hasMammogram or modality == 'MG'
      end
    end
  end
  if not hasMammogram then
    return nil
  end
  table.sort(instances)
  return series, table.concat(instances, ',')
end

local function alreadyForwarded(studyId)
  -- the metadata is absent until the first forward: RestApiGet then fails
  local ok, value = pcall(RestApiGet, '/studies/' .. studyId .. '/metadata/' .. FORWARDED)
  if ok then
    return value
  end
  return ''
end

function OnStableStudy(studyId, tags, metadata)
  local series, instances = seriesToForward(studyId)
  if series == nil then
    return                                    -- no mammogram: not for calcnode
  end
  if instances == alreadyForwarded(studyId) then
    return                                    -- nothing new (e.g. only calcnode's results arrived)
  end
  print('calcnode routing: study ' .. studyId .. ' (' .. #series .. ' series) -> ' .. CALCNODE)
  -- one Orthanc job = one association for the whole study (visible, with its error, in /jobs)
  RestApiPost('/modalities/' .. CALCNODE .. '/store',
              DumpJson({ Resources = series, Synchronous = false }, true))
  RestApiPut('/studies/' .. studyId .. '/metadata/' .. FORWARDED, instances)
end
