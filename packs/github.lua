--- A GitHub pack: comments on issues and closes them, through GitHub's REST
-- API. It is split over two files: this one defines the commands and
-- events; github/client.lua (beside it, found by require "github.client")
-- talks to GitHub.
--
-- Commands, each with input { repo = "owner/name", issue = 12, ... }:
--   commentOnIssue { body = "text" } -> CommentAdded { repo, issue, url }
--   closeIssue {}                    -> IssueClosed { repo, issue, url }
-- and GitHubError { repo, issue, error } when the input is wrong or GitHub
-- refuses.
--
-- Settings, read at each call: GITHUB_TOKEN (a token that may write
-- issues), GITHUB_API_URL (default https://api.github.com; GitHub
-- Enterprise: https://HOST/api/v3).

local flyte = require "flyte"
local client = require "github.client"

local CommentAdded = flyte.event_def { name = "CommentAdded" }
local IssueClosed = flyte.event_def { name = "IssueClosed" }
local GitHubError = flyte.event_def { name = "GitHubError" }

-- The issue the input names, or nil and what is wrong with the input.
local function target(input)
  if type(input) ~= "table" then
    return nil, "input must be an object with repo and issue"
  end
  if type(input.repo) ~= "string"
      or not input.repo:match("^[%w%-%._]+/[%w%-%._]+$") then
    return nil, "repo must be \"owner/name\""
  end
  if math.type(input.issue) ~= "integer" or input.issue < 1 then
    return nil, "issue must be an issue number"
  end
  return "/repos/" .. input.repo .. "/issues/" .. input.issue
end

local function failure(input, message)
  local given = type(input) == "table" and input or {}
  return GitHubError { repo = given.repo or flyte.null,
    issue = given.issue or flyte.null, error = message }
end

-- Runs fn(github, issue_path) with the input checked and a client made.
local function on_issue(fn)
  return function(input)
    local path, bad = target(input)
    if not path then return failure(input, bad) end
    local github, err = client.from_env()
    if not github then return failure(input, err) end
    return fn(input, github, path)
  end
end

local comment = on_issue(function(input, github, path)
  if type(input.body) ~= "string" or input.body == "" then
    return failure(input, "body must be the comment's text")
  end
  local answer, err = github:request("POST", path .. "/comments",
    { body = input.body })
  if not answer then return failure(input, err) end
  return CommentAdded { repo = input.repo, issue = input.issue,
    url = answer.html_url }
end)

local close = on_issue(function(input, github, path)
  local answer, err = github:request("PATCH", path, { state = "closed" })
  if not answer then return failure(input, err) end
  return IssueClosed { repo = input.repo, issue = input.issue,
    url = answer.html_url }
end)

return flyte.pack {
  name = "GitHub",
  help_url = "https://docs.github.com/en/rest/issues",
  commands = {
    commentOnIssue = {
      output_events = { CommentAdded, GitHubError },
      timeout = 30,
      handler = comment,
    },
    closeIssue = {
      output_events = { IssueClosed, GitHubError },
      timeout = 30,
      handler = close,
    },
  },
}
