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

describe("flyte-host dev, as an author runs it", function()
  -- from a folder of the author's own: dev must leave nothing in it
  local function in_folder(argv)
    local dir = testing.tmpdir()
    os.execute("cp packs/jira.lua spec/fixtures/host/broken_handler.lua " .. dir)
    local words = { "cd", dir, "&&", "exec" }
    for _, a in ipairs(argv) do words[#words + 1] = "'" .. a .. "'" end
    return testing.spawn({ "sh", "-c", table.concat(words, " ") }), dir
  end

  local function listing(dir)
    local p = io.popen("ls -A " .. dir)
    local names = p:read("a")
    p:close()
    return names
  end

  it("runs twice at once: each on its own --port, health on a free port",
    function()
      local a_port, b_port = core.free_port(), core.free_port()
      local a, dir = in_folder({ testing.binary(), "dev", "jira.lua",
        "--port", a_port })
      local b = in_folder({ testing.binary(), "dev", "jira.lua", "--port",
        b_port })
      local health_a = a:wait_log("health on port (%d+)")
      local health_b = b:wait_log("health on port (%d+)")
      assert.are_not.equal(health_a, health_b)
      assert.equal(200, (testing.get("http://127.0.0.1:" .. health_b .. "/live")))
      a:wait_log("registered pack JiraPack")
      b:wait_log("registered pack JiraPack")
      assert.equal(0, a:stop())
      assert.equal(0, b:stop())
      -- and no flyte-outbox/ in the author's folder
      assert.equal("broken_handler.lua\njira.lua\n", listing(dir))
    end)

  it("exits 1 for a pack that does not load, leaving nothing behind", function()
    local dev, dir = in_folder({ testing.binary(), "dev", "broken_handler.lua",
      "--port", core.free_port() })
    assert.equal(1, dev:wait_exit(10))
    assert.matches("handler must be a function", dev:log())
    assert.equal("broken_handler.lua\njira.lua\n", listing(dir))
  end)

  it("prints its usage for dev --help", function()
    local help = testing.spawn({ testing.binary(), "dev", "--help" })
    assert.equal(0, help:wait_exit(5))
    assert.matches("dev PACK.lua", help:log())
    assert.matches("%-%-health%-port", help:log())
  end)
end)
