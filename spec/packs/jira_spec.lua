-- The Jira example pack, in-process with flyte.testing. Without JIRA_URL it
-- makes up issue numbers; with JIRA_URL it calls Jira's REST API, here a
-- stub server (testing.http_stub: flyte-host stub) on 127.0.0.1.
local flyte = require "flyte"
local core = require "flyte.core"
local testing = require "flyte.testing"

local env = require "support.env"

-- Sets the Jira settings for the rest of the test (unset unless given);
-- the pack reads them at each call.
local function jira_env(vars)
  finally(env.set { JIRA_URL = vars.JIRA_URL or false,
    JIRA_USER = vars.JIRA_USER or false, JIRA_TOKEN = vars.JIRA_TOKEN or false })
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

describe("packs/jira.lua", function()
  local pack = testing.load("packs/jira.lua")

  describe("without JIRA_URL", function()
    it("creates an issue for a project with a made-up number", function()
      jira_env {}
      local event = pack:invoke("createIssue", { project = "FOO", ticketText = "Printer on fire" })
      assert.equal("IssueCreated", event.event)
      assert.equal("FOO", event.payload.project)
      assert.matches("^%d+$", event.payload.issueId)
      assert.equal("http://jira/FOO/" .. event.payload.issueId, event.payload.location)
    end)

    it("answers IssueCreationError when the project is missing", function()
      jira_env {}
      assert.same({ event = "IssueCreationError",
        payload = { project = flyte.null, error = "project is required" } },
        pack:invoke("createIssue", { ticketText = "no project" }))
    end)

    it("answers IssueCreationError when there is no input at all", function()
      jira_env {}
      assert.equal("IssueCreationError", pack:invoke("createIssue").event)
    end)
  end)

  describe("with JIRA_URL", function()
    local jira

    setup(function()
      local created = { status = 201, body = { id = "10000", key = "FOO-1",
        self = "https://jira.example.com/rest/api/2/issue/10000" } }
      jira = testing.http_stub {
        ["POST /rest/api/2/issue"] = created,
        ["POST /refusing/rest/api/2/issue"] = { status = 400, body = {
          errorMessages = {}, errors = {
            summary = "You must specify a summary of the issue.",
            project = "project is required" } } },
        ["POST /denying/rest/api/2/issue"] = { status = 401,
          body = "<html>\n  <body>Unauthorized</body>\n</html>" },
        ["POST /keyless/rest/api/2/issue"] = { status = 201, body = { id = "10000" } },
      }
    end)

    teardown(function()
      if jira then jira:stop() end
    end)

    local function last_request()
      local requests = jira:requests()
      return requests[#requests]
    end

    it("creates the issue in Jira and answers IssueCreated with its key and page", function()
      jira_env { JIRA_URL = jira.url }
      assert.same({ event = "IssueCreated", payload = { project = "FOO",
        issueId = "FOO-1", location = jira.url .. "/browse/FOO-1" } },
        pack:invoke("createIssue", { project = "FOO", ticketText = "Printer on fire" }))
    end)

    it("posts the project, the summary and the issue type as JSON", function()
      jira_env { JIRA_URL = jira.url }
      pack:invoke("createIssue", { project = "FOO", ticketText = "Printer on fire" })
      local req = last_request()
      assert.equal("POST", req.method)
      assert.equal("/rest/api/2/issue", req.path)
      assert.equal("application/json", req.headers["content-type"])
      assert.same({ fields = { project = { key = "FOO" }, summary = "Printer on fire",
        issuetype = { name = "Task" } } }, flyte.json.decode(req.body))
    end)

    it("authenticates with JIRA_USER and JIRA_TOKEN", function()
      jira_env { JIRA_URL = jira.url, JIRA_USER = "flyte@example.com", JIRA_TOKEN = "t0k3n" }
      pack:invoke("createIssue", { project = "FOO", ticketText = "x" })
      assert.equal("Basic Zmx5dGVAZXhhbXBsZS5jb206dDBrM24=",
        last_request().headers.authorization)
    end)

    it("sends no Authorization header when JIRA_TOKEN is unset", function()
      jira_env { JIRA_URL = jira.url, JIRA_USER = "flyte@example.com" }
      pack:invoke("createIssue", { project = "FOO", ticketText = "x" })
      assert.is_nil(last_request().headers.authorization)
    end)

    it("takes a JIRA_URL that ends with a slash", function()
      jira_env { JIRA_URL = jira.url .. "/" }
      local event = pack:invoke("createIssue", { project = "FOO", ticketText = "x" })
      assert.equal(jira.url .. "/browse/FOO-1", event.payload.location)
      assert.equal("/rest/api/2/issue", last_request().path)
    end)

    it("answers IssueCreationError with Jira's messages when Jira refuses", function()
      jira_env { JIRA_URL = jira.url .. "/refusing" }
      assert.same({ event = "IssueCreationError", payload = { project = "FOO",
        error = "Jira answered 400: project: project is required; "
          .. "summary: You must specify a summary of the issue." } },
        pack:invoke("createIssue", { project = "FOO" }))
    end)

    it("answers IssueCreationError with the text of an error that is not JSON", function()
      jira_env { JIRA_URL = jira.url .. "/denying" }
      assert.same({ event = "IssueCreationError", payload = { project = "FOO",
        error = "Jira answered 401: <html> <body>Unauthorized</body> </html>" } },
        pack:invoke("createIssue", { project = "FOO", ticketText = "x" }))
    end)

    it("answers IssueCreationError when Jira's answer has no issue key", function()
      jira_env { JIRA_URL = jira.url .. "/keyless" }
      assert.same({ event = "IssueCreationError", payload = { project = "FOO",
        error = 'Jira answered 201 with no issue key: {"id":"10000"}' } },
        pack:invoke("createIssue", { project = "FOO", ticketText = "x" }))
    end)

    it("answers IssueCreationError when Jira cannot be reached", function()
      local root = "http://127.0.0.1:" .. assert(core.free_port())
      jira_env { JIRA_URL = root }
      assert.same({ event = "IssueCreationError", payload = { project = "FOO",
        error = "cannot reach Jira: POST " .. root
          .. "/rest/api/2/issue: Couldn't connect to server" } },
        pack:invoke("createIssue", { project = "FOO", ticketText = "x" }))
    end)

    it("answers IssueCreationError when JIRA_URL is not a URL", function()
      jira_env { JIRA_URL = "jira.example.com" }
      assert.same({ event = "IssueCreationError", payload = { project = "FOO",
        error = "JIRA_URL must be an http:// or https:// URL, got 'jira.example.com'" } },
        pack:invoke("createIssue", { project = "FOO", ticketText = "x" }))
    end)

    it("reads JIRA_URL from the environment of flyte-host invoke", function()
      local p = assert(io.popen("env JIRA_URL=" .. quote(jira.url) .. " "
        .. quote(testing.binary()) .. " invoke packs/jira.lua createIssue "
        .. quote('{"project": "FOO", "ticketText": "x"}') .. " 2>/dev/null"))
      local out = p:read("a")
      assert.is_true(p:close())
      assert.same({ event = "IssueCreated", payload = { project = "FOO",
        issueId = "FOO-1", location = jira.url .. "/browse/FOO-1" } },
        flyte.json.decode(out))
    end)
  end)

  it("registers one command with both events and help links", function()
    local reg = pack:registration()
    assert.equal("JiraPack", reg.name)
    assert.same({ { name = "createIssue", events = { "IssueCreated", "IssueCreationError" },
      links = { { href = "http://jirapack/help#create-issue-command", rel = "help" } } } },
      reg.commands)
  end)

  it("reports the flyte-api check as healthy outside a host", function()
    local health, healthy = pack:health()
    assert.is_true(healthy)
    assert.is_true(health.FlyteApiCheck.healthy)
  end)
end)
