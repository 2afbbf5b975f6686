--- flyte.testing: helpers for busted specs of packs.
--
--   local testing = require "flyte.testing"
--   local pack = testing.load("packs/jira.lua")
--   local event = pack:invoke("createIssue", { project = "FOO" })
--   assert.same("IssueCreated", event.event)
--
-- invoke applies the host's rules exactly: the input goes through the JSON
-- codec, errors and bad returns become the FATAL events the host would
-- post, and the result is what the host would put on the wire.
--
-- pack:observe{ until_events = 3 } runs the pack's observe loop on a fake
-- clock (testing.clock()): flyte.sleep returns at once, flyte.now tells
-- the fake time, so a loop that ticks each minute runs in milliseconds.
--
-- For end-to-end specs, testing.api() starts the stand-in flyte-api and
-- testing.host(path, settings) a real flyte-host process against it.

local core = require "flyte.core"
local flyte = require "flyte"
local runner = require "flyte.runner"

local M = {}

--- What a spec started ---------------------------------------------------------
--
-- Processes (testing.api, testing.host, testing.spawn), temporary folders
-- (testing.tmpdir) and an installed fake clock belong to where they were
-- made: made in a test (`it`, its `finally`), they go when the test ends;
-- made in a setup (lazy_setup, before_each, ...), when the spec file ends;
-- made anywhere else, when the run ends. They are stopped, removed and
-- uninstalled then, whatever the spec forgot. Under busted this follows
-- its test and file events; elsewhere (a script) everything goes when the
-- Lua state closes.

local RUN = {}   -- the owner of what is made outside any spec file
local owned = {} -- owner -> list of cleanups, oldest first
local order = {} -- owners, oldest first (for the end of the run)
local running = {} -- busted's files and tests under way, innermost last

local function file_owner()
  for i = #running, 1, -1 do
    if running[i].kind == "file" then return running[i].element end
  end
  return RUN
end

local function owner()
  local top = running[#running]
  if top and top.kind == "test" then return top.element end
  return file_owner()
end

-- at_file_end: when the spec file ends, even if a test made it (a process's
-- log folder: busted's after_each runs after the test has ended, and may
-- still read the log or the exit status)
local function own(cleanup, at_file_end)
  local o = at_file_end and file_owner() or owner()
  if not owned[o] then
    owned[o] = {}
    order[#order + 1] = o
  end
  table.insert(owned[o], cleanup)
end

local function close(o)
  local list = owned[o]
  owned[o] = nil
  for i = #(list or {}), 1, -1 do pcall(list[i]) end
  return nil, true
end

local function close_all()
  for i = #order, 1, -1 do close(order[i]) end
  order = {}
  return nil, true
end

do
  local ok, busted = pcall(require, "busted")
  if ok and type(busted) == "table" and busted.subscribe then
    for _, kind in ipairs { "file", "test" } do
      busted.subscribe({ kind, "start" }, function(element)
        running[#running + 1] = { kind = kind, element = element }
        return nil, true
      end)
      busted.subscribe({ kind, "end" }, function(element)
        if running[#running] and running[#running].element == element then
          running[#running] = nil
        end
        return close(element)
      end)
    end
    busted.subscribe({ "suite", "end" }, close_all)
  end
  -- at the latest when the state closes (the end of the run)
  M._sentinel = setmetatable({}, { __gc = close_all })
end

--- Waits until fn() returns a true value, checking every 10 ms, for at
-- most `timeout` seconds (default 10). Returns that value; raises naming
-- `what` when the deadline passes.
function M.wait(fn, timeout, what)
  local deadline = core.monotime() + (timeout or 10)
  while true do
    local value = fn()
    if value then return value end
    if core.monotime() > deadline then
      error("timed out after " .. (timeout or 10) .. " s waiting for "
        .. (what or "a condition"), 2)
    end
    core.sleep(0.01)
  end
end

--- Loading a pack in-process ---------------------------------------------------

local Pack = {}
Pack.__index = Pack

local function without_created_at(body)
  local value = assert(core.json_decode(body))
  value.createdAt = nil
  return value
end

--- Loads a pack file as the host does (its directory on package.path).
function M.load(path)
  local dir = path:match("^(.*)/[^/]*$") or "."
  local old = package.path
  package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. old
  local pack, err = runner.load(path)
  package.path = old
  if not pack then error(err, 2) end
  -- the events it declares, for send_event's warning while it runs (the
  -- state may load other packs meanwhile)
  local self = setmetatable({ path = path, pack = pack, events = {},
    log_lines = {}, declared = flyte._declared_events }, Pack)
  flyte._declared_events = nil
  return self
end

--- What the pack (and the host's rules) logged in invoke and observe so
-- far: { { level =, message =, fields = }, ... }, oldest first.
function Pack:logs()
  return self.log_lines
end

-- What flyte-host keeps from pack code (state.c): os.exit raises, and
-- debug.sethook is gone. The same here while a handler runs, so that a
-- spec sees what the host would do.
local EXIT_REFUSED = "os.exit is not allowed in pack code: the host runs "
  .. "other actions too (return an event, flyte.fatal for a failure, or "
  .. "raise an error)"

-- What the pack and the host's rules log while it runs goes to pack:logs()
-- rather than to the spec's output: an invocation that is meant to fail
-- would otherwise print an ERROR line and its traceback in every run.
-- FLYTE_TEST_LOG=1 prints them as well.
local function as_in_host(pack, fn, ...)
  local exit, sethook, log = os.exit, debug.sethook, core.log
  local declared = flyte._declared_events
  flyte._declared_events = pack.declared
  os.exit = function() error(EXIT_REFUSED, 0) end -- luacheck: ignore 122
  debug.sethook = nil -- luacheck: ignore 122
  core.log = function(level, message, fields)
    pack.log_lines[#pack.log_lines + 1] = { level = level, message = message,
      fields = fields and core.json_decode(fields) or nil }
    if os.getenv("FLYTE_TEST_LOG") then log(level, message, fields) end
  end
  local results = table.pack(pcall(fn, ...))
  os.exit, debug.sethook, core.log = exit, sethook, log -- luacheck: ignore 122
  flyte._declared_events = declared
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

--- Runs a command with the host's rules; returns { event =, payload = }.
-- input goes through the JSON codec first, as it would on the wire.
function Pack:invoke(command, input)
  local decoded, input_error
  if input ~= nil then
    local ok, text = pcall(core.json_encode, input)
    if not ok then
      error("invoke: the input cannot be encoded as JSON: " .. text, 2)
    end
    decoded, input_error = core.json_decode(text)
  end
  flyte._event_sink = function(event)
    self.events[#self.events + 1] = { event = event.event,
      payload = event.payload }
    return true
  end
  -- a task, as in the host: waiting yields, flyte.spawn works, and the
  -- command's timeout cuts it at its deadline
  local timeout = runner.timeout_of(self.pack, command)
  local ok, body, why = as_in_host(self, core.run, timeout or 0, runner.run,
    self.pack, command, decoded, input_error)
  flyte._event_sink = nil
  if not ok then
    if body == "timeout" then
      body = runner.timed_out(command, timeout)
    else
      error("invoke: " .. tostring(why), 2)
    end
  end
  return without_created_at(body)
end

--- The events sent with flyte.send_event so far, as { event =, payload = }.
function Pack:sent_events()
  return self.events
end

--- The health JSON the host would serve, decoded, and whether all is well.
function Pack:health()
  local result, all = {}, true
  for _, name in ipairs(runner.health_names(self.pack)) do
    local body, healthy = runner.health_check(self.pack, name)
    result[name] = assert(core.json_decode(body))
    all = all and healthy
  end
  return result, all
end

--- The registration body the host would send, decoded.
function Pack:registration(labels)
  return assert(core.json_decode((runner.describe(self.pack, labels))))
end

--- A fake clock -------------------------------------------------------------

local Clock = {}
Clock.__index = Clock

local DEFAULT_START = "2026-01-01T00:00:00Z"

-- Days from 1970-01-01 to a date of the proleptic Gregorian calendar
-- (Howard Hinnant's days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (m > 2 and m - 3 or m + 9) + 2) // 5 + d - 1
  return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
end

--- Seconds since 1970-01-01T00:00:00Z of an RFC 3339 time (as flyte.now()
-- gives), or nil when text is not one.
function M.parse_time(text)
  if type(text) ~= "string" then return nil end
  local y, mo, d, h, mi, s, frac, zone = text:match(
    "^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not y or frac == "." then return nil end
  local offset = 0
  if zone ~= "Z" and zone ~= "z" then
    local sign, oh, om = zone:match("^([+-])(%d%d):(%d%d)$")
    if not sign then return nil end
    offset = (tonumber(oh) * 60 + tonumber(om)) * 60
    if sign == "-" then offset = -offset end
  end
  local days = days_from_civil(tonumber(y), tonumber(mo), tonumber(d))
  local seconds = ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60
    + tonumber(s) - offset
  if frac ~= "" then return seconds + tonumber("0" .. frac) end
  return seconds
end

--- A fake clock for flyte.sleep and flyte.now: once installed (clock:install()
-- or pack:observe), flyte.sleep(s) returns at once and moves the clock s
-- seconds on, and flyte.now() tells the clock's time. `start` is an RFC 3339
-- time or seconds since the epoch (default 2026-01-01T00:00:00Z).
function M.clock(start)
  if start == nil then start = DEFAULT_START end
  local t = type(start) == "string" and M.parse_time(start) or start
  if math.type(t) == nil then
    error("testing.clock: start must be an RFC 3339 time or a number of "
      .. "seconds, got " .. tostring(start), 2)
  end
  return setmetatable({ start = t, time = t, sleeps = {}, stopping = false },
    Clock)
end

--- Seconds since the epoch on this clock.
function Clock:seconds()
  return self.time
end

--- Seconds the clock has moved since it started.
function Clock:elapsed()
  return self.time - self.start
end

--- The clock's time, RFC 3339 in UTC with microseconds, as flyte.now().
function Clock:now()
  local micro = math.floor(self.time * 1e6 + 0.5)
  return os.date("!%Y-%m-%dT%H:%M:%S", micro // 1000000)
    .. string.format(".%06dZ", micro % 1000000)
end

--- Moves the clock on, as time passing without a sleep.
function Clock:advance(seconds)
  if type(seconds) ~= "number" or seconds < 0 then
    error("clock:advance: expected a non-negative number of seconds, got "
      .. tostring(seconds), 2)
  end
  self.time = self.time + seconds
end

--- What flyte.sleep does on this clock: false at once once the clock is
-- stopping (as when the host stops), else moves on and returns true. Each
-- call is recorded in clock.sleeps.
function Clock:sleep(seconds)
  self.sleeps[#self.sleeps + 1] = seconds
  if self.stopping then return false end
  self.time = self.time + seconds
  return true
end

--- From now on flyte.sleep returns false, as when the host stops.
function Clock:stop()
  self.stopping = true
end

--- Makes flyte.sleep and flyte.now use this clock until clock:remove(), or
-- at the latest until the test that installed it ends.
function Clock:install()
  flyte._clock = self
  own(function() self:remove() end)
  return self
end

function Clock:remove()
  if flyte._clock == self then flyte._clock = nil end
end

--- Runs the pack's observe function on a fake clock, so that flyte.sleep
-- returns at once, and returns the events it sent (as sent_events) and the
-- clock. opts (all optional):
--   until_events  once this many events are sent, flyte.sleep returns false
--                 (as when the host stops) so that the loop ends
--   clock         a testing.clock() to run on (default: a new one)
--   max_sleeps    raise after this many flyte.sleep calls (default 10000)
--   timeout       raise after this many seconds of real time (default 5)
-- Raises when observe raises, or when it goes on after flyte.sleep returned
-- false, or past max_sleeps or timeout.
function Pack:observe(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("observe: expected a table of options, got " .. type(opts), 2)
  end
  if type(self.pack.observe) ~= "function" then
    error("observe: " .. self.path .. " has no observe function", 2)
  end
  for _, name in ipairs { "until_events", "max_sleeps" } do
    local v = opts[name]
    if v ~= nil and (math.type(v) ~= "integer" or v < 0) then
      error("observe: " .. name .. " must be a whole number, got "
        .. tostring(v), 2)
    end
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number"
      or opts.timeout ~= opts.timeout or opts.timeout <= 0) then
    error("observe: timeout must be a positive number of seconds, got "
      .. tostring(opts.timeout), 2)
  end
  local clock = opts.clock or M.clock()
  local until_events = opts.until_events
  local max_sleeps, timeout = opts.max_sleeps or 10000, opts.timeout or 5
  local sent = {}
  if until_events == 0 then clock:stop() end
  local problem, false_sleeps = nil, 0

  local function stop(why)
    problem = problem or why
    clock:stop()
    error(problem, 0)
  end
  local fake = setmetatable({}, { __index = clock })
  function fake.sleep(_, seconds)
    local n = #clock.sleeps + 1
    if n > max_sleeps then
      stop("observe: still running after " .. max_sleeps .. " calls of "
        .. "flyte.sleep, with " .. #sent .. " event(s) sent")
    end
    local ok = clock:sleep(seconds)
    if not ok then
      false_sleeps = false_sleeps + 1
      if false_sleeps > 10 then
        stop("observe: still running after flyte.sleep returned false 10 "
          .. "times (the host is stopping: end the loop when it does)")
      end
    end
    return ok
  end
  function fake.now() return clock:now() end

  local saved_clock, saved_sink = flyte._clock, flyte._event_sink
  flyte._clock = fake
  flyte._event_sink = function(event)
    local e = { event = event.event, payload = event.payload }
    sent[#sent + 1] = e
    self.events[#self.events + 1] = e
    if until_events and #sent >= until_events then clock:stop() end
    return true
  end
  -- a task, as in the host, cut after `timeout` seconds of real time
  local ok, why, err = as_in_host(self, core.run, timeout, self.pack.observe)
  flyte._clock, flyte._event_sink = saved_clock, saved_sink
  if problem then error(problem, 2) end
  if not ok and why == "timeout" then
    error("observe: still running after " .. timeout .. " s of real time, "
      .. "with " .. #sent .. " event(s) sent", 2)
  end
  if not ok then
    error("observe raised an error: " .. tostring(err), 2)
  end
  return sent, clock
end

--- Processes -----------------------------------------------------------------

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

--- A new empty directory under /tmp (for a spec's packs, outboxes, logs).
-- It is removed, with what is in it, when the test that made it ends.
function M.tmpdir(at_file_end)
  local p = assert(io.popen("mktemp -d /tmp/flyte-spec.XXXXXX"))
  local dir = p:read("l")
  p:close()
  if dir and dir:match("^/tmp/flyte%-spec%.[%w]+$") then
    own(function() os.execute("rm -rf '" .. dir .. "'") end, at_file_end)
  end
  return dir
end
local tmpdir = M.tmpdir

--- A path under /tmp where nothing is yet (a file a spec creates later).
function M.tmpname()
  local path = os.tmpname()
  os.remove(path)
  return path
end

--- The flyte-host binary: $FLYTE_HOST_BIN, else build/flyte-host.
function M.binary()
  return os.getenv("FLYTE_HOST_BIN") or "build/flyte-host"
end

local Process = {}
Process.__index = Process

--- Starts `argv` (a list) with extra environment `env` (a table) in the
-- background; its output goes to a log file.
function M.spawn(argv, env)
  local dir = tmpdir(true) -- its log: kept until the spec file ends
  local words = { "env" }
  for k, v in pairs(env or {}) do words[#words + 1] = quote(k .. "=" .. v) end
  for _, a in ipairs(argv) do words[#words + 1] = quote(a) end
  local log, pidfile, rcfile = dir .. "/log", dir .. "/pid", dir .. "/rc"
  local script = table.concat(words, " ") .. " >" .. log .. " 2>&1 & echo $! >"
    .. pidfile .. "; wait $!; echo $? >" .. rcfile
  assert(os.execute("sh -c " .. quote(script) .. " </dev/null >/dev/null 2>&1 &"))
  local self = setmetatable({ dir = dir, log_path = log, rc_path = rcfile }, Process)
  self.pid = M.wait(function()
    local text = read_file(pidfile)
    return text and tonumber(text:match("%d+"))
  end, 5, "the process to start")
  -- stopped when the test (or block) that started it ends
  own(function() self:stop(5) end)
  return self
end

--- Everything the process wrote so far.
function Process:log()
  return read_file(self.log_path) or ""
end

--- Raises, naming `what` and the end of its log, if the process exited
-- without being asked to (a wait for it would then never end).
local function fail_if_exited(process, name, what)
  local status = not process.signalled and process:exit_status()
  if not status then return end
  local lines = {}
  for line in process:log():gmatch("[^\n]+") do lines[#lines + 1] = line end
  error(string.format("%s exited with status %d before %s; the end of its "
    .. "log:\n%s", name, status, what,
    table.concat(lines, "\n", math.max(1, #lines - 19))), 0)
end

--- Waits until the log matches a Lua pattern; returns the first capture.
-- Fails at once if the process exited unasked.
function Process:wait_log(pattern, timeout)
  local what = "log line matching '" .. pattern .. "'"
  return M.wait(function()
    local found = self:log():match(pattern)
    if found then return found end
    fail_if_exited(self, "the process", what)
  end, timeout, what .. "\n--- log:\n(see " .. self.log_path .. ")")
end

--- The exit status once it has exited, else nil.
function Process:exit_status()
  if self.status then return self.status end
  local text = read_file(self.rc_path)
  self.status = text and tonumber(text:match("%d+"))
  return self.status
end

function Process:signal(name)
  self.signalled = true -- its exit was asked for
  os.execute("kill -" .. name .. " " .. self.pid .. " 2>/dev/null")
end

--- Waits for the process to exit (after a signal); returns its status.
function Process:wait_exit(timeout)
  return M.wait(function() return self:exit_status() end, timeout,
    "process " .. self.pid .. " to exit")
end

--- Stops it with SIGTERM (then SIGKILL after `timeout`); returns the status.
function Process:stop(timeout)
  if self:exit_status() then return self:exit_status() end
  self:signal("TERM")
  local ok, status = pcall(self.wait_exit, self, timeout or 10)
  if ok then return status end
  self:signal("KILL")
  return self:wait_exit(5)
end

--- The stand-in flyte-api -------------------------------------------------------

local Api = {}
Api.__index = Api

local function request(method, url, body, timeout)
  local res, err = flyte.http.request { method = method, url = url,
    body = body, timeout = timeout or 5 }
  if not res then error(err, 3) end
  return res
end

--- Starts the stand-in flyte-api (`flyte-host standin`) on a free port.
-- opts.jwt: require this bearer token.
function M.api(opts)
  opts = opts or {}
  local env = {}
  if opts.jwt then env.FLYTE_JWT = opts.jwt end
  local process = M.spawn({ M.binary(), "standin", "--port", "0" }, env)
  local url = process:wait_log("stand%-in on (http://127%.0%.0%.1:%d+)")
  return setmetatable({ url = url, process = process }, Api)
end

--- Queues an action; returns its id. pack: the pack id (default: the one
-- registered last).
-- opts.any_command: queue it even when the pack did not register that
-- command (the stand-in refuses it otherwise, with 400 naming those it
-- has): to see what a host does with an action for another.
-- opts.count: queue that many copies in one request; returns the first
-- id and the last (the ids between are theirs).
function Api:enqueue(command, input, pack, opts)
  local res = request("POST", self.url .. "/dev/actions",
    { command = command, input = input, pack = pack,
      any_command = opts and opts.any_command or nil,
      count = opts and opts.count or nil })
  assert(res.status == 201, "enqueue: HTTP " .. res.status .. " " .. res.body)
  local queued = assert(core.json_decode(res.body))
  if opts and opts.count then return queued.id, queued.last end
  return queued.id
end

--- Queues an action whose input is the given JSON text, verbatim.
function Api:enqueue_raw(command, input_json)
  local body = '{"command": ' .. core.json_encode(command)
  if input_json then body = body .. ', "input": ' .. input_json end
  local res = request("POST", self.url .. "/dev/actions", body .. "}")
  assert(res.status == 201, "enqueue: HTTP " .. res.status .. " " .. res.body)
  return assert(core.json_decode(res.body)).id
end

--- The stand-in's view of one action.
function Api:action(id)
  local res = request("GET", self.url .. "/dev/actions/" .. id)
  return assert(core.json_decode(res.body))
end

--- Everything the stand-in holds: packs, actions, events, counters.
function Api:state()
  local res = request("GET", self.url .. "/dev/state")
  return assert(core.json_decode(res.body))
end

-- Waits as M.wait does; but when the last host started against this API
-- has exited on its own (no stop or signal asked for it), nothing more
-- will come: fails at once with its exit status and its last log lines.
local function wait_for_host(self, fn, timeout, what)
  return M.wait(function()
    local value = fn()
    if value then return value end
    local host = self.hosts and self.hosts[#self.hosts]
    if host then fail_if_exited(host, "flyte-host", what) end
  end, timeout, what)
end

--- Waits for an action's result; returns it ({ event, payload, createdAt }).
function Api:wait_result(id, timeout)
  return wait_for_host(self, function()
    local res = request("GET", self.url .. "/dev/actions/" .. id .. "/result")
    return res.status == 200 and assert(core.json_decode(res.body))
  end, timeout, "the result of action " .. id)
end

--- Waits for a pack to be registered; returns its registration body.
function Api:wait_registration(timeout)
  return wait_for_host(self, function()
    local packs = self:state().packs
    return packs[1] and packs[1].registration
  end, timeout, "a registration")
end

--- Waits until `n` events have arrived; returns them.
function Api:wait_events(n, timeout)
  return wait_for_host(self, function()
    local events = self:events()
    return #events >= n and events
  end, timeout, n .. " event(s)")
end

--- The events that arrived so far: { { pack =, body = }, ... }.
function Api:events()
  local res = request("GET", self.url .. "/dev/events")
  return assert(core.json_decode(res.body))
end

--- Makes the next API requests on one route fail, hang or come back
-- garbled. spec: { route = "discovery" | "register" | "take" | "result" |
-- "event" | "health", status = an HTTP status to answer instead, delay =
-- seconds to wait before answering (at most 30), body = "truncated" (the
-- first half of the normal body) | "invalid" | "empty", count = how many
-- requests (default 1), after = true to handle each request first and then
-- answer with the fault (a lost reply) }. Without `after`, a faulted
-- request is not handled, nor is one whose client gave up during the delay.
-- Faults on a route are served in the order given; api:state() counts them
-- in faults_served and faults_pending. Returns the number still pending.
function Api:fault(spec)
  local res = request("POST", self.url .. "/dev/faults", spec)
  assert(res.status == 201, "fault: HTTP " .. res.status .. " " .. res.body)
  return assert(core.json_decode(res.body)).faults_pending
end

--- Drops the faults not served yet.
function Api:clear_faults()
  local res = request("DELETE", self.url .. "/dev/faults")
  assert(res.status == 204, "clear_faults: HTTP " .. res.status .. " " .. res.body)
end

function Api:stop()
  return self.process:stop()
end

--- A stub of another service --------------------------------------------------

local Stub = {}
Stub.__index = Stub

--- Starts a scripted HTTP server on 127.0.0.1 (`flyte-host stub`), for
-- specs of packs that call other services: point the pack at stub.url.
-- routes: "METHOD /path" -> { status = 200, headers = {}, body = a string
-- (sent as it is) or a table (sent as JSON), delay = seconds }. Any other
-- request is answered 200 with the request itself as JSON.
function M.http_stub(routes)
  local process = M.spawn({ M.binary(), "stub", "--port", "0",
    core.json_encode(routes or {}) })
  local url = process:wait_log("stub on (http://127%.0%.0%.1:%d+)")
  return setmetatable({ url = url, process = process }, Stub)
end

--- Adds or replaces routes while it runs.
function Stub:route(routes)
  local res = request("POST", self.url .. "/_stub/routes", routes)
  assert(res.status == 204, "stub:route: HTTP " .. res.status .. " " .. res.body)
end

--- The requests it received so far, oldest first: { method, path, query,
-- headers (names lower-cased), body }.
function Stub:requests()
  local res = request("GET", self.url .. "/_stub/requests")
  return assert(core.json_decode(res.body))
end

--- Forgets the requests received so far.
function Stub:clear()
  request("DELETE", self.url .. "/_stub/requests")
end

function Stub:stop()
  return self.process:stop()
end

--- A real flyte-host ------------------------------------------------------------

--- Starts `flyte-host run pack_path` against api (an Api or a URL).
-- settings: extra environment (FLYTE_* variables). The health port is a free
-- one unless given; it is in host.health_url.
function M.host(pack_path, api, settings)
  local env = { FLYTE_API = type(api) == "table" and api.url or api,
    FLYTE_POLL_INTERVAL = "0.5" }
  for k, v in pairs(settings or {}) do env[k] = tostring(v) end
  if not env.FLYTE_HEALTH_PORT then
    env.FLYTE_HEALTH_PORT = tostring(assert(core.free_port()))
  end
  if not env.FLYTE_OUTBOX then env.FLYTE_OUTBOX = tmpdir() .. "/outbox" end
  local process = M.spawn({ M.binary(), "run", pack_path }, env)
  process.outbox = env.FLYTE_OUTBOX
  process.health_url = "http://127.0.0.1:" .. env.FLYTE_HEALTH_PORT .. "/"
  if type(api) == "table" then -- its waits fail at once if the host exits
    api.hosts = api.hosts or {}
    api.hosts[#api.hosts + 1] = process
  end
  return process
end

--- GET a URL; returns status and body (for health checks in specs).
-- timeout: seconds (5).
function M.get(url, timeout)
  local res = request("GET", url, nil, timeout)
  return res.status, res.body
end

return M
