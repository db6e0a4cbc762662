-- Argo CD health check for kretrain.dev/RetrainSchedule: its last decision as Argo CD health.
-- Install: examples/gitops/argocd/health/README.md. Tested by tests/test_argocd_health.py.
--   no status yet                   -> Progressing (the operator has not listed the dataset yet)
--   spec.suspend: true              -> Suspended
--   last decision Error             -> Degraded (its reason and summary: a bad template, a refused dataset
--                                      prefix, a listing that failed)
--   Started, Skipped, Waiting, Pruned -> Healthy (the summary as message; active runs are counted)
-- The RetrainJobs the schedule starts carry their own health (retrainjob.lua).
local MAX_MESSAGE = 1024

local function get(tbl, key)
  if type(tbl) == "table" then
    return tbl[key]
  end
  return nil
end

local function text(value)
  if type(value) == "string" then
    return value
  end
  if type(value) == "number" then
    return tostring(value)
  end
  return ""
end

local function short(message)
  if #message > MAX_MESSAGE then
    return string.sub(message, 1, MAX_MESSAGE - 3) .. "..."
  end
  return message
end

local function health(o)
  local status = get(o, "status")
  local decision = get(status, "lastDecision")
  local action, reason, summary = text(get(decision, "action")), text(get(decision, "reason")), text(get(decision, "summary"))
  if summary == "" then
    summary = text(get(status, "summary"))
  end
  if get(get(o, "spec"), "suspend") == true then
    return "Suspended", "Suspended (spec.suspend is true)" .. (summary ~= "" and (": " .. summary) or "")
  end
  if type(status) ~= "table" or action == "" then
    return "Progressing", "Waiting for the kretrain operator's first poll of the dataset"
  end
  if action == "Error" then
    return "Degraded", reason .. ": " .. summary
  end
  local active = get(status, "active")
  local message = summary
  if type(active) == "table" and #active > 0 then
    message = text(#active) .. " active run(s); " .. message
  end
  return "Healthy", message
end

local hs = {}
local status, message = health(obj)
hs.status = status
hs.message = short(message)
return hs
