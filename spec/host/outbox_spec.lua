-- The outbox: an action the host took always ends with a result, even
-- across a crash; several hosts share one queue and one outbox.
local testing = require "flyte.testing"

local PACK = "spec/fixtures/host/cases.lua"

local tmpdir = testing.tmpdir

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

-- The journal's segment files in a slot, oldest first.
local function segments(outbox, slot)
  local p = assert(io.popen("ls " .. outbox .. "/slot-" .. (slot or 0)
    .. "/journal-*.log 2>/dev/null"))
  local names = {}
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  return names
end

-- Waits until the journal holds `text` (a record is written before the
-- step it guards: the action's result URL once it is taken).
local function wait_journaled(outbox, text)
  testing.wait(function()
    for _, path in ipairs(segments(outbox)) do
      if (read(path) or ""):find(text, 1, true) then return true end
    end
  end, 10, "the journal to hold " .. text)
end

local function listing(dir)
  local p = assert(io.popen("ls " .. dir))
  local names = p:read("a"):gsub("%s+$", "")
  p:close()
  return names
end

describe("the outbox", function()
  local api, dir

  before_each(function()
    api = testing.api()
    dir = tmpdir()
  end)

  after_each(function()
    api:stop()
    os.execute("rm -rf " .. dir)
  end)

  it("gets a FATAL posted for an action whose host was killed mid-handler", function()
    local outbox = dir .. "/outbox"
    local host = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
    api:wait_registration()
    local id = api:enqueue("wait", { file = dir .. "/never" }, "Cases.team.ops")
    testing.wait(function() return api:action(id).state == "PENDING" end, 5, "the action")
    -- the host writes the action down just after taking it: kill it after
    -- that (a crash between the take's reply and that write loses the
    -- action, as a lost take reply does)
    wait_journaled(outbox, "/actions/" .. id .. "/result")
    host:signal("KILL")
    host:wait_exit()
    assert.equal("PENDING", api:action(id).state)

    local again = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
    local result = api:wait_result(id)
    assert.same({ "FATAL", "command 'wait': the host stopped while handling this "
      .. "action; it was not run again (its side effects may have happened)" },
      { result.event, result.payload })
    again:wait_log("outbox: 1 entry from a host that stopped")
    again:wait_log("outbox: delivered the FATAL for action " .. id)
    assert.equal(0, again:stop())
  end)

  it("delivers what it recovered when told to stop before it registered",
    function()
      -- its workers end at once (stopping, nothing to do); the entries it
      -- reads once registered are then posted from the main thread, not
      -- handed to a worker whose loop has ended (they stayed in the
      -- outbox, and the flow waited for the next start)
      local outbox = dir .. "/outbox"
      local host = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
      api:wait_registration()
      local id = api:enqueue("wait", { file = dir .. "/never" })
      wait_journaled(outbox, "/actions/" .. id .. "/result")
      host:signal("KILL")
      host:wait_exit()

      api:fault { route = "register", delay = 1 }
      local again = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
      again:wait_log("health on port")
      again:signal("TERM")
      assert.equal(0, again:wait_exit(20))
      local result = api:action(id).result
      assert.is_table(result, "action " .. id .. " has no result")
      assert.equal("FATAL", result.event)
      -- (from the main thread, or from a worker still serving: a slower
      -- build may still have one)
      assert.matches("outbox: delivered the FATAL for action " .. id .. " ",
        again:log(), 1, true)
      assert.same({}, segments(outbox))
    end)

  it("takes a left-over result the API already has as delivered, and goes on", function()
    -- a result that reached the API, though the host that sent it did not
    -- hear back before it died: the API answers 500 (not PENDING)
    local first = testing.host(PACK, api, { FLYTE_OUTBOX = "off" })
    api:wait_registration()
    local done = api:enqueue("echo", "first", "Cases.team.ops")
    api:wait_result(done)
    assert.equal(0, first:stop())
    local outbox = dir .. "/outbox"
    os.execute("mkdir -p " .. outbox .. "/slot-0")
    local f = assert(io.open(outbox .. "/slot-0/000000000001-a.json", "w"))
    f:write(require("flyte").json.encode { kind = "result", command = "echo",
      action = tostring(done),
      result_url = api.url .. "/v1/packs/Cases.team.ops/actions/" .. done .. "/result",
      body = '{"event":"Echoed","payload":"again","createdAt":"2026-11-28T00:00:00Z"}' })
    f:close()
    local host = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
    host:wait_log("taking it as delivered by that try", 20)
    assert.equal("first", api:action(done).result.payload)
    assert.equal("Echoed", api:wait_result(api:enqueue("echo", 2, "Cases.team.ops")).event)
    assert.equal(0, host:stop())
    -- read once, then gone: an outbox of the old format is moved forward
    assert.equal("lock", listing(outbox .. "/slot-0"))
  end)

  it("moves what an old-format outbox still owes into the journal", function()
    local outbox = dir .. "/outbox"
    os.execute("mkdir -p " .. outbox .. "/slot-0")
    local f = assert(io.open(outbox .. "/slot-0/000000000007-e.json", "w"))
    f:write(require("flyte").json.encode { kind = "event", body =
      '{"event":"Sent","payload":"old","createdAt":"2026-11-28T00:00:00Z"}' })
    f:close()
    -- the API refuses events for now: the host stops before it took it
    api:fault { route = "event", status = 503, count = 1000 }
    local host = testing.host(PACK, api, { FLYTE_OUTBOX = outbox,
      FLYTE_SHUTDOWN_GRACE = 0.5 })
    host:wait_log("event left undelivered")
    assert.equal(0, host:stop())
    host:wait_log("0 delivered, 1 kept for later")
    assert.equal(1, #segments(outbox))
    assert.is_nil(read(outbox .. "/slot-0/000000000007-e.json"))

    api:clear_faults()
    local again = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
    assert.equal("old", api:wait_events(1)[1].body.payload)
    again:wait_log("outbox: 1 entry from a host that stopped")
    again:wait_log("outbox: delivered the event left undelivered")
    assert.equal(0, again:stop())
    assert.equal("lock", listing(outbox .. "/slot-0"))
  end)

  it("is empty after a clean run", function()
    local outbox = dir .. "/outbox"
    local host = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
    api:wait_registration()
    api:wait_result(api:enqueue("send", 1, "Cases.team.ops"))
    api:wait_events(1)
    assert.equal(0, host:stop())
    assert.equal("lock", listing(outbox .. "/slot-0"))
  end)

  it("sets a corrupt entry aside and starts anyway", function()
    local outbox = dir .. "/outbox"
    os.execute("mkdir -p " .. outbox .. "/slot-0")
    local f = assert(io.open(outbox .. "/slot-0/000000000001-a.json", "w"))
    f:write("{half an entr")
    f:close()
    local host = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
    host:wait_log("outbox entry [^\n]*000000000001%-a%.json is corrupt")
    assert.truthy(io.open(outbox .. "/slot-0/000000000001-a.json.corrupt"))
    assert.equal("Echoed", api:wait_result(api:enqueue("echo", 1, "Cases.team.ops")).event)
    assert.equal(0, host:stop())
  end)

  it("skips a torn or corrupt record, logs it, and starts anyway", function()
    local outbox = dir .. "/outbox"
    local host = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
    api:wait_registration()
    local ids = {}
    for i = 1, 3 do
      ids[i] = api:enqueue("wait", { file = dir .. "/never" }, "Cases.team.ops")
      wait_journaled(outbox, "/actions/" .. ids[i] .. "/result")
    end
    host:signal("KILL")
    host:wait_exit()
    -- spoil the first action's record, cut the last one short
    local path = segments(outbox)[1]
    local text = read(path)
    local first = text:find("/actions/" .. ids[1] .. "/result", 1, true)
    local last = text:find("/actions/" .. ids[3] .. "/result", 1, true)
    local f = assert(io.open(path, "wb"))
    f:write(text:sub(1, first - 1), "X", text:sub(first + 1, last))
    f:close()

    local again = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
    again:wait_log("bytes at offset %d+ are not a valid record %(corrupt%); skipped")
    again:wait_log("are not a whole record, as a crash in the middle of a "
      .. "write leaves them; skipped")
    assert.equal("FATAL", api:wait_result(ids[2]).event)
    assert.equal("Echoed", api:wait_result(api:enqueue("echo", 1, "Cases.team.ops")).event)
    assert.equal("PENDING", api:action(ids[1]).state)
    assert.equal("PENDING", api:action(ids[3]).state)
    assert.equal(0, again:stop())
  end)

  it("with FLYTE_OUTBOX_SYNC=off still survives the process dying", function()
    local outbox = dir .. "/outbox"
    local settings = { FLYTE_OUTBOX = outbox, FLYTE_OUTBOX_SYNC = "off" }
    local host = testing.host(PACK, api, settings)
    api:wait_registration()
    local id = api:enqueue("wait", { file = dir .. "/never" }, "Cases.team.ops")
    wait_journaled(outbox, "/actions/" .. id .. "/result")
    host:signal("KILL")
    host:wait_exit()
    local again = testing.host(PACK, api, settings)
    assert.equal("FATAL", api:wait_result(id).event)
    assert.equal(0, again:stop())
  end)

  it("names a bad FLYTE_OUTBOX_SYNC in one line, exit status 2", function()
    for _, how in ipairs { { FLYTE_OUTBOX_SYNC = "sometimes" },
                           { "--outbox-sync", "sometimes" } } do
      local env = { FLYTE_API = api.url, FLYTE_OUTBOX = dir .. "/outbox" }
      local argv = { testing.binary(), "run", PACK }
      if how[1] then
        argv[#argv + 1] = how[1]
        argv[#argv + 1] = how[2]
      else
        env.FLYTE_OUTBOX_SYNC = how.FLYTE_OUTBOX_SYNC
      end
      local p = testing.spawn(argv, env)
      assert.equal(2, p:wait_exit())
      assert.equal("flyte-host: " .. (how[1] or "FLYTE_OUTBOX_SYNC")
        .. ": 'sometimes' is not always or off\n", p:log())
    end
  end)

  it("keeps running when a file size limit stops its journal growing",
    function()
      -- RLIMIT_FSIZE (ulimit -f, a container's setting): a write past it
      -- fails with EFBIG, and raises SIGXFSZ, which ends a process that
      -- does not ignore it
      local port = tostring(require("flyte.core").free_port())
      local env = { FLYTE_API = api.url, FLYTE_OUTBOX = dir .. "/outbox",
        FLYTE_POLL_INTERVAL = "0.5", FLYTE_HEALTH_PORT = port }
      local host = testing.spawn({ "prlimit", "--fsize=65536",
        testing.binary(), "run", PACK }, env)
      finally(function()
        if host:exit_status() == nil then host:stop() end
      end)
      api:wait_registration()
      local first, last = api:enqueue("echo", "x", "Cases.team.ops",
        { count = 300 })
      for id = first, last do
        assert.same("x", api:wait_result(id, 20).payload)
      end
      assert.is_nil(host:exit_status())
      assert.matches("outbox: cannot write to .*File too large", host:log())
      -- counted for the operator's alerts
      local status, body = testing.get("http://127.0.0.1:" .. port
        .. "/metrics")
      assert.equal(200, status)
      local errors = tonumber(body:match(
        "\nflyte_outbox_write_errors_total (%d+)"))
      assert.is_true(errors and errors > 0, "write errors: "
        .. tostring(errors))
      assert.equal(0, host:stop())
    end)

  it("can be turned off", function()
    local host = testing.host(PACK, api, { FLYTE_OUTBOX = "off" })
    api:wait_registration()
    assert.equal("Echoed", api:wait_result(api:enqueue("echo", 1, "Cases.team.ops")).event)
    assert.equal(0, host:stop())
  end)
end)

describe("three hosts running the same pack", function()
  it("complete each action of their shared queue exactly once", function()
    local api = testing.api()
    local dir = tmpdir()
    local hosts = {}
    for i = 1, 3 do
      -- one outbox directory: each host holds a slot of its own
      hosts[i] = testing.host(PACK, api, { FLYTE_OUTBOX = dir .. "/outbox",
        FLYTE_WORKERS = 2 })
    end
    testing.wait(function()
      local packs = api:state().packs
      return packs[1] and packs[1].registrations == 3
    end, 10, "three registrations")
    local ids = {}
    for i = 1, 90 do ids[i] = api:enqueue("echo", i) end
    for i = 1, 90 do assert.equal(i, api:wait_result(ids[i], 20).payload) end
    local took = 0
    for i = 1, 3 do
      assert.equal(0, hosts[i]:stop())
      local n = select(2, hosts[i]:log():gsub("action %d+: echo %-> Echoed", ""))
      took = took + n
    end
    -- every action completed once: the stand-in refuses a second result
    assert.equal(90, took)
    for _, a in ipairs(api:state().actions) do assert.equal("DONE", a.state) end
    api:stop()
    os.execute("rm -rf " .. dir)
  end)
end)
