-- flyte-host dev: the pack against the stand-in API embedded in the binary.
local testing = require "flyte.testing"
local core = require "flyte.core"

describe("flyte-host dev", function()
  local dev, port

  lazy_setup(function()
    port = core.free_port()
    dev = testing.spawn({ testing.binary(), "dev", "packs/jira.lua", "--port", port,
      "--health-port", "0", "--send", 'createIssue {"project": "FOO"}' })
  end)

  lazy_teardown(function() dev:stop() end)

  it("prints how to send an action with curl", function()
    dev:wait_log("curl %-s %-X POST http://127%.0%.0%.1:" .. port
      .. "/dev/actions %-d '{\"command\": \"createIssue\", \"input\": {}}'")
  end)

  it("logs the registration", function()
    dev:wait_log("%[stand%-in%] registration for JiraPack: {")
  end)

  it("sends the --send action and logs it and its result", function()
    dev:wait_log("%[stand%-in%] action for JiraPack: {[^\n]*\"project\":\"FOO\"")
    dev:wait_log("%[stand%-in%] result for JiraPack: {[^\n]*\"event\":\"IssueCreated\"")
  end)

  it("handles an action sent with curl", function()
    local res = require("flyte").http.request { method = "POST",
      url = "http://127.0.0.1:" .. port .. "/dev/actions",
      body = '{"command": "createIssue", "input": {"project": "BAR"}}' }
    assert.equal(201, res.status)
    dev:wait_log("%[stand%-in%] result for JiraPack: {[^\n]*\"project\":\"BAR\"")
  end)

  it("stops on SIGINT with exit status 0", function()
    dev:signal("INT")
    assert.equal(0, dev:wait_exit(10))
  end)
end)
