--- The Jira pack of the flyte-client README, in Lua.
--
-- Command createIssue: input { project = "FOO", ticketText = "..." };
-- creates a Task in that project, summed up by ticketText, and answers
-- IssueCreated { project, issueId (the issue key, "FOO-123"), location (the
-- issue's page) } or IssueCreationError { project, error }.
--
-- Settings, from the environment, read at each call:
--   JIRA_URL     the Jira root, e.g. https://jira.example.com. When it is
--                unset no Jira is called: the issue gets a made-up number
--                (123, 124, ...) and a location under http://jira/, so that
--                `make run` and `flyte-host dev` work with no Jira at all.
--   JIRA_USER, JIRA_TOKEN   basic auth, when both are set.

local flyte = require "flyte"

local IssueCreated = flyte.event_def { name = "IssueCreated" }
local IssueCreationError = flyte.event_def {
  name = "IssueCreationError",
  help_url = "http://jirapack/help#errors",
}

local REQUEST_TIMEOUT = 20 -- seconds; the command's own timeout is 30

local function setting(name)
  local value = os.getenv(name)
  if value == "" then return nil end
  return value
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  return (s:gsub("..?.?", function(chunk)
    local a, b, c = chunk:byte(1, 3)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local out = {}
    for i = 1, 4 do
      local k = (n >> (6 * (4 - i))) & 63
      out[i] = B64:sub(k + 1, k + 1)
    end
    if not b then out[3] = "=" end
    if not c then out[4] = "=" end
    return table.concat(out)
  end))
end

-- What Jira says went wrong, from an error body: {"errorMessages": [...],
-- "errors": {"field": "message"}}, or the text itself.
local function jira_error(body)
  local decoded = flyte.json.decode(body)
  local parts = {}
  if type(decoded) == "table" then
    for _, msg in ipairs(type(decoded.errorMessages) == "table"
        and decoded.errorMessages or {}) do
      parts[#parts + 1] = tostring(msg)
    end
    local fields = {}
    for field in pairs(type(decoded.errors) == "table" and decoded.errors or {}) do
      fields[#fields + 1] = field
    end
    table.sort(fields)
    for _, field in ipairs(fields) do
      parts[#parts + 1] = field .. ": " .. tostring(decoded.errors[field])
    end
  end
  if #parts > 0 then return table.concat(parts, "; ") end
  local text = body:gsub("%s+", " "):match("^%s*(.-)%s*$")
  if text == "" then return "no message" end
  return #text > 200 and text:sub(1, 200) .. "..." or text
end

local function failure(project, message)
  return IssueCreationError { project = project, error = message }
end

-- Without JIRA_URL: today's behaviour, a made-up issue number.
local next_id = 122

local function create_locally(project)
  next_id = next_id + 1
  local id = tostring(next_id)
  return IssueCreated {
    project = project,
    issueId = id,
    location = "http://jira/" .. project .. "/" .. id,
  }
end

local function create_in_jira(root, input)
  if not root:match("^https?://[^/]") then
    return failure(input.project, "JIRA_URL must be an http:// or https:// "
      .. "URL, got '" .. root .. "'")
  end
  root = root:gsub("/+$", "")
  local headers = { Accept = "application/json" }
  local user, token = setting("JIRA_USER"), setting("JIRA_TOKEN")
  if user and token then
    headers.Authorization = "Basic " .. base64(user .. ":" .. token)
  end
  local res, err = flyte.http.request {
    method = "POST",
    url = root .. "/rest/api/2/issue",
    headers = headers,
    body = { fields = {
      project = { key = input.project },
      summary = input.ticketText,
      issuetype = { name = "Task" },
    } },
    timeout = REQUEST_TIMEOUT,
  }
  if not res then
    return failure(input.project, "cannot reach Jira: " .. err)
  end
  if res.status < 200 or res.status > 299 then
    return failure(input.project, "Jira answered " .. res.status .. ": "
      .. jira_error(res.body))
  end
  local issue = flyte.json.decode(res.body)
  if type(issue) ~= "table" or type(issue.key) ~= "string" then
    return failure(input.project, "Jira answered " .. res.status
      .. " with no issue key: " .. jira_error(res.body))
  end
  return IssueCreated {
    project = input.project,
    issueId = issue.key,
    location = root .. "/browse/" .. issue.key,
  }
end

local function create_issue(input)
  if type(input) ~= "table" or type(input.project) ~= "string"
      or input.project == "" then
    return IssueCreationError {
      project = type(input) == "table" and input.project or flyte.null,
      error = "project is required",
    }
  end
  local root = setting("JIRA_URL")
  if not root then return create_locally(input.project) end
  return create_in_jira(root, input)
end

return flyte.pack {
  name = "JiraPack",
  help_url = "http://jirapack/help",
  commands = {
    createIssue = {
      output_events = { IssueCreated, IssueCreationError },
      help_url = "http://jirapack/help#create-issue-command",
      timeout = 30,
      handler = create_issue,
    },
  },
  health_checks = {
    FlyteApiCheck = flyte.api_health_check,
  },
}
