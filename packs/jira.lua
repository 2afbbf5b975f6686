--- The Jira pack of the flyte-client README, in Lua.
--
-- Command createIssue: input { project = "FOO", ticketText = "..." };
-- answers IssueCreated { project, issueId, location } or
-- IssueCreationError { project, error }.

local flyte = require "flyte"

local IssueCreated = flyte.event_def { name = "IssueCreated" }
local IssueCreationError = flyte.event_def {
  name = "IssueCreationError",
  help_url = "http://jirapack/help#errors",
}

local next_id = 122

local function create_issue(input)
  if type(input) ~= "table" or type(input.project) ~= "string"
      or input.project == "" then
    return IssueCreationError {
      project = type(input) == "table" and input.project or flyte.null,
      error = "project is required",
    }
  end
  next_id = next_id + 1
  local id = tostring(next_id)
  return IssueCreated {
    project = input.project,
    issueId = id,
    location = "http://jira/" .. input.project .. "/" .. id,
  }
end

return flyte.pack {
  name = "JiraPack",
  help_url = "http://jirapack/help",
  commands = {
    createIssue = {
      output_events = { IssueCreated, IssueCreationError },
      help_url = "http://jirapack/help#create-issue-command",
      handler = create_issue,
    },
  },
  health_checks = {
    FlyteApiCheck = flyte.api_health_check,
  },
}
