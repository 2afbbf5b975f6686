--- The flyte module: what a pack sees.
--
-- Pack definitions and events, the exact JSON codec, sending events,
-- sleeping, the clock, the log and an HTTP client. The primitives are
-- C (flyte.core); this file checks arguments and shapes the values.

local core = require "flyte.core"
local schema = require "flyte.schema"
local options = require "flyte.options"

local M = {}

M.null = core.null
M.VERSION = "0.1.0"

--- Event definitions ------------------------------------------------------

M.event_def = schema.event_def
M.is_event_def = schema.is_event_def

--- Builds the event `{ event = name, payload = payload }`.
function M.event(def, payload)
  local name = schema.event_name(def)
  if not name then
    local swapped = schema.event_name(payload) ~= nil
    error("flyte.event: the first argument must be an event definition or "
      .. "a non-empty name, got " .. type(def) .. (swapped and
        " (the arguments are swapped: flyte.event(definition, payload))"
        or ""), 2)
  end
  return { event = name, payload = payload }
end

--- Builds a FATAL event: the action failed.
function M.fatal(payload)
  return { event = "FATAL", payload = payload }
end

--- Checks a pack table and returns it; raises naming the bad field.
function M.pack(pack)
  local ok, err = schema.check_pack(pack)
  if not ok then error(err, 2) end
  return pack
end

--- JSON ---------------------------------------------------------------------

--- Marks a table as a JSON array (so that an empty one encodes as []).
function M.array(t)
  if t == nil then t = {} end
  if type(t) ~= "table" then
    error("flyte.array: expected a table, got " .. type(t), 2)
  end
  local mt = getmetatable(t)
  if mt ~= nil and mt ~= core.array_mt then
    error("flyte.array: the table already has a metatable", 2)
  end
  return setmetatable(t, core.array_mt)
end

M.json = {
  null = core.null,
  array = M.array,
  max_depth = core.json_max_depth,
}

--- Encodes a value as JSON; raises when it has no JSON form.
-- opts.pretty: indent with two spaces.
function M.json.encode(value, opts)
  local ok, text = pcall(core.json_encode, value, opts and opts.pretty)
  if not ok then error("flyte.json.encode: " .. text, 2) end
  return text
end

--- Decodes JSON text; returns the value, or nil and a message.
function M.json.decode(text)
  if type(text) ~= "string" then
    error("flyte.json.decode: expected a string, got " .. type(text), 2)
  end
  return core.json_decode(text)
end

--- True when t is marked as a JSON array.
function M.json.is_array(t)
  return type(t) == "table" and getmetatable(t) == core.array_mt
end

--- Events, time, the log ------------------------------------------------------

-- Where events go when there is no host (plain lua5.4): flyte.testing sets
-- this to capture them.
M._event_sink = nil

-- A clock to use instead of the real one (plain lua5.4): flyte.testing sets
-- this to a fake clock, an object with :sleep(seconds) -> boolean and
-- :now() -> RFC 3339 text, so that an observe loop runs without waiting.
M._clock = nil

-- The names of the events the loaded pack declares (set when the host or
-- flyte.testing loads it), and those flyte.send_event warned about.
M._declared_events = nil
local warned = {}

--- Sends an event on the pack's own. Returns true, or nil and a message.
function M.send_event(event)
  local name = type(event) == "table" and event.event
  if type(name) ~= "string" or name == "" then
    error("flyte.send_event: expected an event (build it with an event "
      .. "definition or flyte.event), got " .. type(event), 2)
  end
  local declared = M._declared_events
  if declared and not declared[name] and not warned[name] then
    warned[name] = true -- once per name: an observe loop would flood the log
    core.log("warn", string.format("flyte.send_event: event '%s' is not "
      .. "among the pack's events (declare it in the pack's events); "
      .. "sending it anyway", name))
  end
  local ok, body = pcall(core.json_encode,
    { event = name, payload = event.payload, createdAt = M.now() })
  if not ok then
    return nil, "flyte.send_event: the event cannot be encoded: " .. body
  end
  if core.hosted then return core.send_event(body) end
  if M._event_sink then return M._event_sink(core.json_decode(body)) end
  core.log("info", "event not sent (no flyte-host): " .. body)
  return true
end

--- Sleeps; returns false at once when the host is stopping or reloading.
function M.sleep(seconds)
  if type(seconds) ~= "number" or seconds < 0 or seconds ~= seconds then
    error("flyte.sleep: expected a non-negative number of seconds, got "
      .. (type(seconds) == "number" and tostring(seconds) or type(seconds)), 2)
  end
  if M._clock then return M._clock:sleep(seconds) end
  return core.sleep(seconds)
end

--- Runs fn(...) alongside the caller, within the same action; returns a
-- task whose task:wait() returns true and fn's results, or false and its
-- error. Tasks not waited on end with their action.
function M.spawn(fn, ...)
  if type(fn) ~= "function" then
    error("flyte.spawn: expected a function, got " .. type(fn), 2)
  end
  return core.spawn(fn, ...)
end

local EXEC_OPTIONS = { cmd = true, stdin = true, env = true, cwd = true,
  timeout = true }

--- Runs a program without blocking other actions: no shell unless cmd
-- names one. Returns { status, signal, stdout, stderr, truncated }, or nil
-- and a message (it could not start, or ran past its timeout and was
-- killed). stdout and stderr keep at most 1 MiB each (truncated says when
-- more was dropped). env: names to strings (set) or false (removed), over
-- the host's environment.
function M.exec(opts)
  local function fail(msg) error("flyte.exec: " .. msg, 3) end
  local bad = options.unknown(opts, EXEC_OPTIONS)
  if bad then fail(bad) end
  local cmd = opts.cmd
  if type(cmd) ~= "table" or #cmd == 0 then
    fail("cmd must be a list of strings, the program and its arguments, got "
      .. type(cmd))
  end
  for i = 1, #cmd do
    if type(cmd[i]) ~= "string" then
      fail("cmd[" .. i .. "] must be a string, got " .. type(cmd[i]))
    end
  end
  if opts.stdin ~= nil and type(opts.stdin) ~= "string" then
    fail("stdin must be a string, got " .. type(opts.stdin))
  end
  if opts.cwd ~= nil and type(opts.cwd) ~= "string" then
    fail("cwd must be a string, got " .. type(opts.cwd))
  end
  if opts.env ~= nil then
    if type(opts.env) ~= "table" then
      fail("env must be a table of names to strings, got " .. type(opts.env))
    end
    for k, v in pairs(opts.env) do
      if type(k) ~= "string" or not k:match("^[^=%z]+$") then
        fail("env names must be strings without '=', got " .. tostring(k))
      end
      if v ~= false and type(v) ~= "string" then
        fail("env." .. k .. " must be a string or false, got " .. type(v))
      end
    end
  end
  local timeout = opts.timeout
  bad = options.timeout(timeout)
  if bad then fail(bad) end
  local res, err = core.exec(cmd, opts.stdin, opts.env, opts.cwd, timeout)
  if not res then return nil, "flyte.exec: " .. err end
  return res
end

--- The current time, RFC 3339 in UTC.
function M.now()
  if M._clock then return M._clock:now() end
  return core.now()
end

M.log = {}
for _, level in ipairs { "debug", "info", "warn", "error" } do
  M.log[level] = function(msg, fields)
    local encoded
    if fields ~= nil then
      if type(fields) ~= "table" then
        error("flyte.log." .. level .. ": fields must be a table, got "
          .. type(fields), 2)
      end
      local ok, text = pcall(core.json_encode, fields)
      encoded = ok and text or nil
    end
    core.log(level, tostring(msg), encoded)
  end
end

--- The flyte-api's health, for health_checks: healthy is true even when the
-- API is down (an API outage must not restart every pack); status says.
function M.api_health_check()
  local _, status = core.api_health()
  return true, status
end

-- flyte.http is loaded on first use: most states (every worker's) of a
-- pack that makes no HTTP calls never pay for it.
setmetatable(M, { __index = function(t, key)
  if key == "http" then
    local http = require "flyte.http"
    rawset(t, "http", http)
    return http
  end
end })

return M
