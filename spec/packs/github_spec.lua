-- The GitHub example pack: a pack over two files (packs/github.lua and
-- packs/github/client.lua), against a stub of GitHub's API on 127.0.0.1.
local flyte = require "flyte"
local testing = require "flyte.testing"

local env = require "support.env"

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

describe("packs/github.lua", function()
  local pack = testing.load("packs/github.lua")
  local github

  setup(function()
    local issue = "https://github.com/acme/app/issues/12"
    github = testing.http_stub {
      ["POST /repos/acme/app/issues/12/comments"] = { status = 201,
        body = { id = 1, html_url = issue .. "#issuecomment-1" } },
      ["PATCH /repos/acme/app/issues/12"] = { status = 200,
        body = { number = 12, state = "closed", html_url = issue } },
      ["POST /repos/acme/app/issues/404/comments"] = { status = 404,
        body = { message = "Not Found",
          documentation_url = "https://docs.github.com/rest" } },
      ["PATCH /repos/acme/app/issues/500"] = { status = 502,
        body = "Bad gateway" },
    }
  end)

  teardown(function()
    if github then github:stop() end
  end)

  -- Points the pack at the stub, with a token unless one is given.
  local function use_stub(vars)
    vars = vars or {}
    finally(env.set { GITHUB_API_URL = github.url,
      GITHUB_TOKEN = vars.GITHUB_TOKEN == nil and "ghp_test" or vars.GITHUB_TOKEN })
  end

  local function last_request()
    local requests = github:requests()
    return requests[#requests]
  end

  it("comments on an issue and answers CommentAdded with the comment's URL", function()
    use_stub()
    assert.same({ event = "CommentAdded", payload = { repo = "acme/app", issue = 12,
      url = "https://github.com/acme/app/issues/12#issuecomment-1" } },
      pack:invoke("commentOnIssue", { repo = "acme/app", issue = 12, body = "Deployed." }))
  end)

  it("posts the comment as JSON with the token and GitHub's headers", function()
    use_stub()
    pack:invoke("commentOnIssue", { repo = "acme/app", issue = 12, body = "Deployed." })
    local req = last_request()
    assert.same({ body = "Deployed." }, flyte.json.decode(req.body))
    assert.equal("Bearer ghp_test", req.headers.authorization)
    assert.equal("application/vnd.github+json", req.headers.accept)
    assert.equal("2022-11-28", req.headers["x-github-api-version"])
    assert.equal("flyte-github-pack", req.headers["user-agent"])
  end)

  it("sends no Authorization header when GITHUB_TOKEN is unset", function()
    use_stub { GITHUB_TOKEN = false }
    pack:invoke("commentOnIssue", { repo = "acme/app", issue = 12, body = "x" })
    assert.is_nil(last_request().headers.authorization)
  end)

  it("closes an issue with a PATCH and answers IssueClosed", function()
    use_stub()
    assert.same({ event = "IssueClosed", payload = { repo = "acme/app", issue = 12,
      url = "https://github.com/acme/app/issues/12" } },
      pack:invoke("closeIssue", { repo = "acme/app", issue = 12 }))
    local req = last_request()
    assert.equal("PATCH", req.method)
    assert.same({ state = "closed" }, flyte.json.decode(req.body))
  end)

  it("answers GitHubError with GitHub's message when GitHub refuses", function()
    use_stub()
    assert.same({ event = "GitHubError", payload = { repo = "acme/app", issue = 404,
      error = "GitHub answered 404: Not Found" } },
      pack:invoke("commentOnIssue", { repo = "acme/app", issue = 404, body = "x" }))
  end)

  it("answers GitHubError with the text of an error that is not JSON", function()
    use_stub()
    assert.same({ event = "GitHubError", payload = { repo = "acme/app", issue = 500,
      error = "GitHub answered 502: Bad gateway" } },
      pack:invoke("closeIssue", { repo = "acme/app", issue = 500 }))
  end)

  it("answers GitHubError naming the field when the repo is malformed", function()
    use_stub()
    assert.same({ event = "GitHubError", payload = { repo = "acme", issue = 12,
      error = 'repo must be "owner/name"' } },
      pack:invoke("closeIssue", { repo = "acme", issue = 12 }))
  end)

  it("answers GitHubError when the comment has no body", function()
    use_stub()
    assert.equal('body must be the comment\'s text',
      pack:invoke("commentOnIssue", { repo = "acme/app", issue = 12 }).payload.error)
  end)

  it("answers GitHubError when GITHUB_API_URL is not a URL", function()
    finally(env.set { GITHUB_API_URL = "api.github.com" })
    assert.equal("the GitHub API URL must be an http:// or https:// URL, got 'api.github.com'",
      pack:invoke("closeIssue", { repo = "acme/app", issue = 12 }).payload.error)
  end)

  it("registers both commands with their events", function()
    assert.same({ { name = "closeIssue", events = { "IssueClosed", "GitHubError" } },
      { name = "commentOnIssue", events = { "CommentAdded", "GitHubError" } } },
      pack:registration().commands)
  end)

  it("finds its client module beside it when flyte-host runs it", function()
    local p = assert(io.popen("env GITHUB_API_URL=" .. quote(github.url) .. " "
      .. quote(testing.binary()) .. " invoke packs/github.lua closeIssue "
      .. quote('{"repo": "acme/app", "issue": 12}') .. " 2>&1"))
    local out = p:read("a")
    assert.is_true(p:close(), out)
    assert.equal("IssueClosed", flyte.json.decode(out).event)
  end)
end)
