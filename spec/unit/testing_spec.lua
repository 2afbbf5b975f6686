-- flyte.testing cleans up after a spec that forgets to: what a test
-- started is stopped (and its folders removed, its clock uninstalled) when
-- the test ends, what a block's setup started when the block ends; and a
-- wait on the stand-in fails at once, with the host's own error, when the
-- host has exited.
local testing = require "flyte.testing"
local core = require "flyte.core"

local function alive(pid)
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

local function exists(path)
  return os.execute("test -e '" .. path .. "'") == true
end

describe("flyte.testing", function()
  it("stops what a spec forgot, when its test or block ends", function()
    local out = testing.tmpname()
    finally(function() os.remove(out) end)
    local cmd = string.format("FORGETFUL_OUT=%s FLYTE_HOST_BIN=%s lua5.4 "
      .. "/usr/bin/busted --cpath='%s' spec/fixtures/specs/forgetful.lua "
      .. ">%s.log 2>&1", out, testing.binary(),
      package.cpath:match("[^;]*build[^;]*%?%.so") or "build/?.so", out)
    local ok = os.execute(cmd)
    local f = io.open(out .. ".log")
    local log = f and f:read("a") or ""
    if f then f:close() end
    os.remove(out .. ".log")
    assert.is_true(ok, log)
    local seen = {}
    for line in io.lines(out) do
      local kind, value = line:match("^(%S+) (%S+)$")
      seen[kind] = value
    end
    assert.equal("ok", seen.later, log)
    for _, kind in ipairs { "api", "host", "spawned", "last" } do
      assert.is_false(alive(seen[kind]), kind .. " " .. seen[kind]
        .. " still running")
    end
    assert.is_false(exists(seen.dir), seen.dir .. " is still there")
  end)

  it("fails a wait at once with the host's error when the host exited",
    function()
      local api = testing.api()
      local host = testing.host("spec/fixtures/packs/invalid.lua", api)
      local t0 = core.monotime()
      local ok, err = pcall(api.wait_registration, api, 10)
      assert.is_false(ok)
      assert.matches("^flyte%-host exited with status 1 before a "
        .. "registration; the end of its log:\n", err)
      assert.matches("invalid.lua", err)
      assert.is_true(core.monotime() - t0 < 5)
      assert.equal(1, host:exit_status())
    end)
end)

describe("testing.http_stub", function()
  local flyte = require "flyte"

  it("answers its routes, echoes the rest, and records what came", function()
    local stub = testing.http_stub {
      ["POST /rest/api/2/issue"] = { status = 201,
        body = { id = "10000", key = "FOO-1" } },
      ["GET /text"] = { body = "plain", headers = { ["X-Kind"] = "text" } },
    }
    local res = assert(flyte.http.request { method = "POST",
      url = stub.url .. "/rest/api/2/issue", body = { fields = { n = 1 } } })
    assert.same({ 201, "application/json", { id = "10000", key = "FOO-1" } },
      { res.status, res.headers["content-type"], flyte.json.decode(res.body) })
    res = assert(flyte.http.request { url = stub.url .. "/text" })
    assert.same({ 200, "text", "plain" },
      { res.status, res.headers["x-kind"], res.body })
    res = assert(flyte.http.request { url = stub.url .. "/else?a=1%202",
      headers = { ["X-Trace"] = "t1" } })
    local echoed = flyte.json.decode(res.body)
    assert.same({ "GET", "/else", "a=1%202", "t1" },
      { echoed.method, echoed.path, echoed.query, echoed.headers["x-trace"] })
    local seen = stub:requests()
    assert.equal(3, #seen)
    assert.same({ fields = { n = 1 } }, flyte.json.decode(seen[1].body))
    stub:clear()
    assert.same({}, stub:requests())
  end)

  it("takes new routes while it runs", function()
    local stub = testing.http_stub()
    stub:route { ["GET /later"] = { status = 503, body = "busy" } }
    local res = assert(flyte.http.request { url = stub.url .. "/later" })
    assert.same({ 503, "busy" }, { res.status, res.body })
    assert.has_error(function() stub:route { ["nonsense"] = {} } end)
  end)

  it("fails at once, with the stub's reason, on routes it refuses",
    function()
      local t0 = core.monotime()
      local ok, err = pcall(testing.http_stub, { nonsense = {} })
      assert.is_false(ok)
      assert.truthy(err:find('a route must be "METHOD /path"', 1, true), err)
      assert.is_true(core.monotime() - t0 < 5, "it took "
        .. (core.monotime() - t0) .. " s")
    end)

  it("stops at once while a route's delay holds a request", function()
    local stub = testing.http_stub { ["GET /slow"] = { delay = 20 } }
    local client = testing.spawn { "curl", "-s", stub.url .. "/slow" }
    testing.wait(function() return #stub:requests() == 1 end, 5,
      "the request to arrive")
    local t0 = core.monotime()
    stub:stop()
    assert.is_true(core.monotime() - t0 < 5, "the stop waited "
      .. (core.monotime() - t0) .. " s")
    client:stop()
  end)
end)
