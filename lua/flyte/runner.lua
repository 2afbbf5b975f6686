--- The host's rules for running pack code: one action in, one result body
-- out; health checks. flyte-host calls these from C, and flyte.testing calls
-- the same functions, so a spec sees exactly what the host would post.

local core = require "flyte.core"
local schema = require "flyte.schema"

-- pack code's coroutines may wait on the host's operations
require("flyte.coroutine").install()

local M = {}

local function encode_body(name, payload)
  return core.json_encode { event = name, payload = payload,
    createdAt = core.now() }
end

-- Replaces bytes that are not UTF-8 (an error message quoting a Latin-1
-- body, say) with U+FFFD, so that the text can go into JSON.
local function utf8_clean(s)
  if utf8.len(s) then return s end
  local out, i = {}, 1
  while i <= #s do
    local ok, bad = utf8.len(s, i)
    if ok then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, bad - 1) .. "\u{FFFD}"
    i = bad + 1
  end
  return table.concat(out)
end

local function fatal(text)
  return encode_body("FATAL", utf8_clean(text)), "FATAL", true
end

local function describe(v)
  if schema.is_event_def(v) then
    local name = schema.event_name(v)
    return string.format("the event definition '%s' itself (call it to "
      .. "build an event: %s { ... })", name, name)
  end
  if type(v) == "table" then
    return "a table with no event name (build events with an event "
      .. "definition, flyte.event or flyte.fatal)"
  end
  return "a " .. type(v) .. " (" .. tostring(v) .. ")"
end

-- "module 'x' not found:" and the 20 lines of places Lua looked: one line,
-- naming where beside the pack it looked (the rest is the Lua path).
local function short_error(msg, dir)
  if type(msg) ~= "string" then return msg end
  local head, name = msg:match("^(.-module '([^']+)' not found):")
  if not head then return msg end
  local file = name:gsub("%.", "/")
  return string.format("%s (looked for %s/%s.lua and %s/%s/init.lua beside "
    .. "the pack, then on the Lua path)", head, dir or ".", file, dir or ".",
    file)
end

-- Where a value was made, "file:line", when the source says so: for an
-- error raised through a tail call, which has lost the caller's line.
local function position_of(fn)
  local info = type(fn) == "function" and debug.getinfo(fn, "S")
  if info and info.short_src and info.linedefined > 0 then
    return info.short_src .. ":" .. info.linedefined
  end
end

-- The source of every file loaded from the pack's directory by M.load, by
-- path: what a reload watches, and what the other states of the same
-- generation load, so that they all run the same code even when a file
-- changes on disk between their loads.
local sources = {}

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  return text
end

--- Loads a pack file in this state and checks it. `snapshot` (optional)
-- maps paths to sources to use instead of the files on disk.
-- Returns the pack table, or nil and a message.
function M.load(path, snapshot)
  local dir = path:match("^(.*)/[^/]*$") or "."
  M.pack_dir = dir
  local template = dir .. "/?.lua;" .. dir .. "/?/init.lua"
  local function source_of(file)
    local text = snapshot and snapshot[file]
    if text == nil then
      local err
      text, err = read(file)
      if not text then return nil, err end
    end
    sources[file] = text
    return text
  end
  -- modules beside the pack come from the snapshot (or disk, recorded)
  table.insert(package.searchers, 2, function(name)
    local file = package.searchpath(name, template)
    if not file then return nil end
    local text, err = source_of(file)
    if not text then return "\n\t" .. err end
    local chunk, why = load(text, "@" .. file)
    if not chunk then error(why, 0) end
    return chunk, file
  end)

  local text, err = source_of(path)
  if not text then return nil, err end
  local chunk, why = load(text, "@" .. path)
  if not chunk then return nil, why end
  local ok, pack = pcall(chunk)
  if not ok then
    pack = short_error(pack, dir)
    -- `return flyte.pack { ... }` is a tail call: its error has lost the
    -- line. The bad field's name is in the message; the line is the first
    -- that sets it.
    local field = type(pack) == "string" and not pack:match("^[^:]+:%d+:")
      and pack:match("^pack%.([%w_.]+) ")
    field = field and field:match("([%a_][%w_]*)$")
    if field then
      local n = 0
      for line in (text .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        if line:match("[^%w_]" .. field .. "%s*=") or line:match("^" .. field
            .. "%s*=") then
          pack = path .. ":" .. n .. ": " .. pack
          break
        end
      end
    end
    return nil, path .. ": error while loading the pack: " .. tostring(pack)
  end
  local valid, invalid = schema.check_pack(pack)
  if not valid then return nil, path .. ": " .. invalid end
  -- what flyte.send_event warns about: an event the registration does not
  -- name (neither in pack.events nor in a command's output_events)
  local declared = {}
  for _, event in ipairs(schema.registration(pack).events) do
    declared[event.name] = true
  end
  require("flyte")._declared_events = declared
  return pack
end

--- The sources loaded so far (path -> text).
function M.sources()
  return sources
end

--- What C needs to know about a pack: its registration body as JSON, the
-- number of commands, whether it has observe.
function M.describe(pack, labels)
  local body = core.json_encode(schema.registration(pack, labels))
  return body, #schema.command_names(pack), pack.observe ~= nil
end

--- Runs one action. `input` is the decoded input (nil when absent);
-- `input_error` is set when the input could not be decoded.
-- Returns the result body (JSON text), the event name, and true when FATAL.
function M.run(pack, command, input, input_error)
  local cmd = pack.commands and pack.commands[command]
  if cmd == nil then
    local names = schema.command_names(pack)
    return fatal(string.format(
      "command '%s' is unknown to pack %s (its commands: %s)",
      tostring(command), pack.name,
      #names > 0 and table.concat(names, ", ") or "none"))
  end
  if input_error then
    return fatal(string.format(
      "command '%s': the action's input cannot be decoded: %s",
      command, input_error))
  end

  local traceback
  local ok, event = xpcall(cmd.handler, function(e)
    traceback = debug.traceback(type(e) == "string" and e or nil, 2)
    return e
  end, input)
  if not ok then
    -- out of memory: let the host say so (and rebuild the state)
    if event == "not enough memory" then error(event, 0) end
    local logged, fields = pcall(core.json_encode,
      { command = command, traceback = utf8_clean(tostring(traceback)) })
    core.log("error", string.format("command '%s' raised an error", command),
      logged and fields or nil)
    if type(event) == "table" then
      local encoded, body = pcall(encode_body, "FATAL", event)
      if encoded then return body, "FATAL", true end
      return fatal(string.format("command '%s' raised a table that cannot be "
        .. "encoded as JSON: %s", command, body))
    end
    local msg = short_error(tostring(event), M.pack_dir)
    -- an error with no position (raised through a tail call): say which
    -- handler it came from
    if not msg:match("^[^:]+:%d+:") then
      local where = position_of(cmd.handler)
      if where then msg = msg .. " (in the handler at " .. where .. ")" end
    end
    return fatal(string.format("command '%s' raised an error: %s",
      command, msg))
  end

  local name = type(event) == "table" and event.event
  if type(name) ~= "string" or name == "" then
    if event == nil then
      return fatal(string.format("command '%s' returned no event", command))
    end
    return fatal(string.format("command '%s' returned %s, not an event",
      command, describe(event)))
  end

  if name ~= "FATAL" then
    local known = false
    for _, ref in ipairs(cmd.output_events) do
      if schema.event_name(ref) == name then known = true break end
    end
    if not known then
      core.log("warn", string.format("command '%s' returned event '%s', "
        .. "which is not among its output_events; sending it anyway",
        command, name))
    end
  end

  local encoded, body = pcall(encode_body, name, event.payload)
  if not encoded then
    return fatal(string.format("command '%s' returned event '%s' whose "
      .. "payload cannot be encoded as JSON: %s", command, name, body))
  end
  return body, name, name == "FATAL"
end

--- The FATAL body of a command that ran past its timeout, as the host
-- posts it.
function M.timed_out(command, timeout)
  return fatal(string.format("command '%s' timed out after %g s", command,
    timeout))
end

--- The command's own timeout, or nil.
function M.timeout_of(pack, command)
  local cmd = pack.commands and pack.commands[command]
  return type(cmd) == "table" and cmd.timeout or nil
end

--- Sorted names of the pack's health checks ({ "DefaultCheck" } when none).
function M.health_names(pack)
  local names = {}
  for name in pairs(pack.health_checks or {}) do names[#names + 1] = name end
  table.sort(names)
  if #names == 0 then names[1] = "DefaultCheck" end
  return names
end

--- Runs one health check. Returns its JSON ({"healthy":..,"status":..})
-- and whether it is healthy.
function M.health_check(pack, name)
  local check = pack.health_checks and pack.health_checks[name]
  local healthy, status
  if check == nil then
    healthy, status = true, "Pack is running."
  else
    local ok, h, s = pcall(check)
    if ok then
      healthy, status = h and true or false, s
    else
      healthy, status = false, "check raised an error: " .. tostring(h)
    end
  end
  local ok, body = pcall(core.json_encode, { healthy = healthy,
    status = status == nil and core.null or status })
  if not ok then
    return core.json_encode { healthy = false,
      status = "check returned a status that is not JSON: " .. body }, false
  end
  return body, healthy
end

return M
