-- bench/floor.c (flyte-bench-floor): what `make bench` measures its floors
-- with. The bench is not run by the tests; these keep its tool working.
local testing = require "flyte.testing"
local flyte = require "flyte"

local function floor(args)
  local dir = testing.binary():match("^(.*)/[^/]*$") or "."
  local p = assert(io.popen(dir .. "/flyte-bench-floor " .. args .. " 2>&1"))
  local text = p:read("a")
  local ok = p:close()
  return ok, text
end

describe("flyte-bench-floor", function()
  it("prints the RssAnon of a process with the host's libraries loaded", function()
    local ok, text = floor("memory")
    assert.is_true(ok, text)
    local kb = assert(flyte.json.decode(text), text).rss_anon_kb
    assert.is_true(math.type(kb) == "integer" and kb > 0, text)
  end)

  describe("against the stand-in", function()
    local api, take_url

    lazy_setup(function()
      api = testing.api()
      local host = testing.host("bench/echo.lua", api, { FLYTE_OUTBOX = "off" })
      api:wait_registration()
      host:stop() -- as the bench does: only the floor tool talks to the API
      take_url = api.url .. "/v1/packs/BenchEcho/actions/take"
    end)

    lazy_teardown(function() api:stop() end)

    it("times requests through libcurl and over a bare socket", function()
      local ok, text = floor("http " .. take_url .. " 200")
      assert.is_true(ok, text)
      local f = assert(flyte.json.decode(text), text)
      assert.equal(200, f.requests)
      assert.is_true(f.libcurl_us > 0 and f.socket_us > 0, text)
    end)

    it("fails, saying why, when an answer is not a 204", function()
      local ok, text = floor("http " .. api.url .. "/v1/packs/Nobody/actions/take 10")
      assert.is_falsy(ok)
      assert.matches("not a 204 %(HTTP 404%)", text)
    end)
  end)
end)
