-- Argo CD health of a kubetune FineTuneJob, ModelDeployment or FineTuneSchedule, from the operator's
-- summary conditions (Ready, Reconciling, Stalled). Argo CD runs this with the base and table libraries.
local hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end
local conditions = {}
for _, c in ipairs(obj.status.conditions or {}) do
  conditions[c.type] = c
end
local function describe(c)
  return (c.reason or "") .. ": " .. (c.message or "")
end
local ready, stalled = conditions["Ready"], conditions["Stalled"]
if ready == nil then
  return hs
end
if stalled ~= nil and stalled.status == "True" then
  return { status = "Degraded", message = describe(stalled) }
end
if ready.status == "True" then
  return { status = "Healthy", message = describe(ready) }
end
-- Held by the spec: a suspended FineTuneJob or FineTuneSchedule, a canary paused by spec.traffic.canary.pause.
if ready.reason == "Suspended" or ready.reason == "CanaryPaused" then
  return { status = "Suspended", message = describe(ready) }
end
hs.message = describe(ready)
return hs
