-- flyte-host dev's web page, clicked through in a real browser: Debian's
-- headless chromium, driven by spec/browser/devpage.js (playwright-core).
-- `make test` installs chromium and runs npm ci in spec/browser; where
-- either cannot be had, these specs are pending and say why.
local testing = require "flyte.testing"
local core = require "flyte.core"

local CHROMIUM = os.getenv("FLYTE_CHROMIUM") or "/usr/bin/chromium"
local SCRIPT = "spec/browser/devpage.js"
local PLAYWRIGHT = "spec/browser/node_modules/playwright-core/package.json"
local SCREENSHOT = "build/devpage.png"

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function succeeds(command)
  return os.execute(command .. " >/dev/null 2>&1") == true
end

-- Why the page cannot be driven in a browser here, or nil when it can.
local function unavailable()
  if not succeeds("test -x " .. quote(CHROMIUM)) then
    return "chromium not available: no " .. CHROMIUM .. " (`make test` "
      .. "installs Debian's chromium package)"
  end
  if not succeeds("command -v node") then
    return "chromium not available: node is not installed, so nothing can "
      .. "drive it (spec/browser/devpage.js)"
  end
  if not succeeds("test -f " .. PLAYWRIGHT) then
    if not succeeds("command -v npm") then
      return "chromium not available: npm is not installed, so "
        .. "playwright-core cannot be (spec/browser/package.json)"
    end
    return "chromium not available: playwright-core is not installed: run "
      .. "`make browser-deps` (npm ci in spec/browser)"
  end
  return nil
end

-- Runs devpage.js on url with more arguments; returns whether it passed
-- and what it printed. Not under `make sanitize`'s preloaded ASan runtime,
-- which is there for lua5.4 alone.
local function drive(url, ...)
  local words = { "env", "-u", "LD_PRELOAD", "-u", "ASAN_OPTIONS", "node",
    SCRIPT, url, ... }
  for i, w in ipairs(words) do words[i] = quote(w) end
  local p = assert(io.popen(table.concat(words, " ") .. " 2>&1"))
  local output = p:read("a")
  return p:close() == true, output
end

describe("the stand-in's dev page routes", function()
  local http = require("flyte").http
  local api

  lazy_setup(function() api = testing.api() end)
  lazy_teardown(function() api:stop() end)

  local function get(path)
    return assert(http.request { url = api.url .. path, timeout = 30 })
  end

  local function revision()
    return assert(core.json_decode(get("/dev/watch").body)).revision
  end

  it("serves the page at / and /index.html as UTF-8 HTML", function()
    for _, path in ipairs { "/", "/index.html" } do
      local res = get(path)
      assert.equal(200, res.status)
      assert.equal("text/html; charset=utf-8", res.headers["content-type"])
      assert.truthy(res.body:find("<title>flyte-host dev</title>", 1, true))
    end
  end)

  it("answers other methods at / with 405", function()
    local res = assert(http.request { method = "POST", url = api.url .. "/",
      body = "{}" })
    assert.equal(405, res.status)
    assert.equal("GET, HEAD", res.headers["allow"])
  end)

  it("answers /dev/watch at once without since", function()
    local view = assert(core.json_decode(get("/dev/watch").body))
    assert.is_number(view.revision)
    assert.same({}, view.packs)
    assert.same({}, view.actions)
    assert.same({}, view.events)
    assert.equal(0, view.total_actions)
  end)

  it("answers /dev/watch?since=R once something has changed", function()
    local before = revision()
    local sender = testing.spawn({ "sh", "-c", "sleep 0.5; curl -s -X POST "
      .. api.url .. "/v1/packs -d '{\"name\": \"Late\"}'" })
    local started = core.monotime()
    local view = assert(core.json_decode(get("/dev/watch?since=" .. before).body))
    local waited = core.monotime() - started
    sender:wait_exit(10)
    assert.is_true(waited >= 0.3, "answered after " .. waited .. " s")
    assert.is_true(view.revision > before)
    assert.equal("Late", view.packs[1].id)
  end)

  it("refuses a since that is not a revision number", function()
    local res = get("/dev/watch?since=soon")
    assert.equal(400, res.status)
    assert.same({ error = "since must be a revision number" },
      core.json_decode(res.body))
  end)
end)

describe("flyte-host dev's web page, in headless chromium", function()
  local reason = unavailable()

  it("says it is waiting for the pack to register before one has", function()
    if reason then pending(reason) end
    local api = testing.api()
    finally(function() api:stop() end)
    local ok, output = drive(api.url .. "/", "--waiting")
    assert(ok, "spec/browser/devpage.js failed:\n" .. output)
  end)

  it("sends an action with its form and shows the result, a FATAL one in red",
    function()
      if reason then pending(reason) end
      local port = core.free_port()
      -- a copy: the page's run breaks it to see a failed reload
      local pack = testing.tmpdir() .. "/jira.lua"
      assert(os.execute("cp packs/jira.lua " .. pack))
      local dev = testing.spawn({ testing.binary(), "dev", pack,
        "--port", port, "--health-port", "0" })
      finally(function() dev:stop() end)
      local url = dev:wait_log("Open (http://127%.0%.0%.1:%d+/) in a browser")
      assert.equal("http://127.0.0.1:" .. port .. "/", url)
      local ok, output = drive(url, "--screenshot", SCREENSHOT, "--pack", pack)
      assert(ok, "spec/browser/devpage.js failed:\n" .. output
        .. "\n--- flyte-host dev's log:\n" .. dev:log())
    end)
end)
