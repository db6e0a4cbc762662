-- Argo CD health check for kretrain.dev/RetrainJob: status.state and its conditions as Argo CD health.
-- Install: examples/gitops/argocd/health/README.md. Tested by tests/test_argocd_health.py.
--   Pending, Training, Evaluating    -> Progressing (with the epoch and the condition message)
--   Suspended (spec.suspend: true)   -> Suspended
--   Suspended (Job held, e.g. Kueue) -> Progressing ("queued")
--   Queued (waiting for Kueue)       -> Progressing (the Queued condition: waiting, or preempted)
--   Promoted                         -> Healthy (the decision summary as message)
--   Rejected                         -> Healthy: a rejection is the promotion gate working. Set REJECTED
--                                       below to "Degraded", or annotate one RetrainJob with
--                                       kretrain.dev/rejected-health: Degraded, to see it as Degraded.
--   Failed                           -> Degraded (the Failed condition's reason and message)
--   AwaitingApproval                 -> Suspended (a passing candidate waits for a person's approval)
-- The status is written by the operator but any writer of the status subresource can put anything in it:
-- every field is type-checked and every message is cut to MAX_MESSAGE bytes.
local REJECTED = "Healthy"
local ANNOTATION = "kretrain.dev/rejected-health"
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

local function condition(status, ctype)
  local conditions = get(status, "conditions")
  if type(conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(conditions) do
    if get(c, "type") == ctype then
      return c
    end
  end
  return nil
end

-- "Reason: message" of a condition, or fallback when the condition is missing or empty.
local function explain(c, fallback)
  local reason, message = text(get(c, "reason")), text(get(c, "message"))
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if reason ~= "" or message ~= "" then
    return reason .. message
  end
  return fallback
end

local function decision_summary(status, fallback)
  local decision = get(status, "decision")
  local summary = text(get(decision, "summary"))
  if summary ~= "" then
    return summary
  end
  return explain(condition(status, "Promoted"), fallback)
end

local function health(o)
  local status = get(o, "status")
  local state = text(get(status, "state"))
  local generation = get(get(o, "metadata"), "generation")
  local observed = get(status, "observedGeneration")
  if state == "" then
    return "Progressing", "Waiting for the kretrain operator to pick up the RetrainJob"
  end
  if state == "Promoted" then
    return "Healthy", "Promoted: " .. decision_summary(status, "the candidate is the incumbent")
  end
  if state == "Rejected" then
    local wanted = REJECTED
    if text(get(get(get(o, "metadata"), "annotations"), ANNOTATION)) == "Degraded" then
      wanted = "Degraded"
    end
    local reason = text(get(condition(status, "Promoted"), "reason"))
    if reason == "DryRun" then  -- dry-run mode: the gate decided, nothing was meant to be promoted
      wanted = "Healthy"
    end
    return wanted, "Rejected: " .. decision_summary(status, "the candidate was not promoted")
  end
  if state == "Failed" then
    return "Degraded", "Failed: " .. explain(condition(status, "Failed"), "the run failed")
  end
  if state == "AwaitingApproval" then  -- promotion.approval Manual: a person approves or rejects the candidate
    return "Suspended", "Awaiting approval: " .. decision_summary(status, "the candidate passed the gate")
  end
  if type(generation) == "number" and type(observed) == "number" and observed < generation then
    return "Progressing", "Waiting for the operator to act on generation " .. text(generation)
  end
  if state == "Suspended" then
    local c = condition(status, "Suspended")
    if get(get(o, "spec"), "suspend") == true then
      return "Suspended", explain(c, "spec.suspend is true")
    end
    return "Progressing", "Queued: " .. explain(c, "the Job is suspended (waiting for admission)")
  end
  if state == "Queued" then  -- the Job waits for admission by a Kueue LocalQueue (or was preempted)
    return "Progressing", "Queued: " .. explain(condition(status, "Queued"), "waiting for admission by Kueue")
  end
  if state == "Pending" then  -- e.g. Training False / WaitingForRegistry: the incumbent could not be read yet
    return "Progressing", "Pending: " .. explain(condition(status, "Training"), "waiting to start the Job")
  end
  if state == "Training" then
    local epoch = text(get(get(status, "progress"), "display"))
    local message = "Training"
    if epoch ~= "" then
      message = message .. " (epoch " .. epoch .. ")"
    end
    if type(get(status, "fallback")) == "table" then
      message = message .. ": full retrain after the rejected incremental run " .. text(get(get(status, "fallback"), "runId"))
    end
    return "Progressing", message
  end
  if state == "Evaluating" then
    return "Progressing", "Evaluating the candidate against the incumbent"
  end
  return "Unknown", "Unknown state " .. state
end

local hs = {}
local status, message = health(obj)
hs.status = status
hs.message = short(message)
return hs
