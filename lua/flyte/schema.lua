--- Pack definitions: event definitions, checking a pack table, and the
-- registration body the flyte-api expects.
--
-- Every message names the exact field:
--   pack.commands.createIssue.handler must be a function, got nil

local core = require "flyte.core"

local M = {}

local EVENT_DEF = { __name = "flyte.event_def" }
EVENT_DEF.__index = EVENT_DEF

function EVENT_DEF:__call(payload)
  return { event = self.name, payload = payload }
end

function EVENT_DEF:__tostring()
  return "event_def " .. self.name
end

local function is_name(v)
  return type(v) == "string" and v ~= ""
end

local function got(v)
  if type(v) == "string" then return string.format("%q", v) end
  return type(v)
end

--- Makes an event definition: a callable that builds events.
function M.event_def(def)
  if type(def) == "string" then def = { name = def } end
  if type(def) ~= "table" then
    error("flyte.event_def: expected a table { name = ..., help_url = ... }, "
      .. "got " .. type(def), 2)
  end
  if not is_name(def.name) then
    error("event_def.name must be a non-empty string, got " .. got(def.name), 2)
  end
  if def.help_url ~= nil and type(def.help_url) ~= "string" then
    error("event_def.help_url must be a string, got " .. got(def.help_url), 2)
  end
  for k in pairs(def) do
    if k ~= "name" and k ~= "help_url" then
      error("event_def." .. tostring(k) .. " is not a field of an event "
        .. "definition (name, help_url)", 2)
    end
  end
  return setmetatable({ name = def.name, help_url = def.help_url }, EVENT_DEF)
end

function M.is_event_def(v)
  return getmetatable(v) == EVENT_DEF
end

--- The name of an event definition given as a def, a plain table or a
-- string; nil when it is none of those.
function M.event_name(def)
  if is_name(def) then return def end
  if type(def) == "table" and is_name(def.name) then return def.name end
  return nil
end

local function check_event_ref(v, where)
  if is_name(v) then return true end
  if type(v) == "table" and is_name(v.name) then
    if v.help_url ~= nil and type(v.help_url) ~= "string" then
      return nil, where .. ".help_url must be a string, got " .. got(v.help_url)
    end
    return true
  end
  return nil, where .. " must be an event definition or a non-empty name, got "
    .. got(v)
end

local function check_fields(t, where, allowed)
  for k in pairs(t) do
    if not allowed[k] then
      local names = {}
      for name in pairs(allowed) do names[#names + 1] = name end
      table.sort(names)
      return nil, where .. "." .. tostring(k) .. " is not a known field ("
        .. table.concat(names, ", ") .. ")"
    end
  end
  return true
end

local function check_list(v, where, check_item, non_empty)
  if type(v) ~= "table" then
    return nil, where .. " must be a list, got " .. got(v)
  end
  local n = #v
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      return nil, where .. " must be a list (keys 1..n), has key " .. got(k)
    end
  end
  if non_empty and n == 0 then
    return nil, where .. " must not be empty"
  end
  for i = 1, n do
    local ok, err = check_item(v[i], where .. "[" .. i .. "]")
    if not ok then return nil, err end
  end
  return true
end

local PACK_FIELDS = { name = true, help_url = true, labels = true,
  events = true, commands = true, health_checks = true, observe = true }
local COMMAND_FIELDS = { output_events = true, help_url = true,
  timeout = true, handler = true }

local function check_command(name, cmd)
  local where = "pack.commands." .. tostring(name)
  if not is_name(name) then
    return nil, "pack.commands keys must be non-empty command names, got "
      .. got(name)
  end
  if type(cmd) ~= "table" then
    return nil, where .. " must be a table, got " .. got(cmd)
  end
  local ok, err = check_fields(cmd, where, COMMAND_FIELDS)
  if not ok then return nil, err end
  if cmd.output_events == nil then
    return nil, where .. ".output_events must be a non-empty list of events, "
      .. "got nil"
  end
  ok, err = check_list(cmd.output_events, where .. ".output_events",
    check_event_ref, true)
  if not ok then return nil, err end
  if type(cmd.handler) ~= "function" then
    return nil, where .. ".handler must be a function, got " .. got(cmd.handler)
  end
  if cmd.help_url ~= nil and type(cmd.help_url) ~= "string" then
    return nil, where .. ".help_url must be a string, got " .. got(cmd.help_url)
  end
  if cmd.timeout ~= nil and (type(cmd.timeout) ~= "number"
      or cmd.timeout <= 0 or cmd.timeout ~= cmd.timeout) then
    return nil, where .. ".timeout must be a positive number of seconds, got "
      .. (type(cmd.timeout) == "number" and tostring(cmd.timeout)
        or got(cmd.timeout))
  end
  return true
end

--- Checks a pack table. Returns true, or nil and a message naming the field.
function M.check_pack(pack)
  if type(pack) ~= "table" then
    return nil, "a pack must be a table (return flyte.pack { ... }), got "
      .. got(pack)
  end
  local ok, err = check_fields(pack, "pack", PACK_FIELDS)
  if not ok then return nil, err end
  if not is_name(pack.name) then
    return nil, "pack.name must be a non-empty string, got " .. got(pack.name)
  end
  if pack.help_url ~= nil and type(pack.help_url) ~= "string" then
    return nil, "pack.help_url must be a string, got " .. got(pack.help_url)
  end
  if pack.labels ~= nil then
    if type(pack.labels) ~= "table" then
      return nil, "pack.labels must be a table of strings, got "
        .. got(pack.labels)
    end
    for k, v in pairs(pack.labels) do
      if not is_name(k) then
        return nil, "pack.labels keys must be non-empty strings, got " .. got(k)
      end
      if type(v) ~= "string" then
        return nil, "pack.labels." .. k .. " must be a string, got " .. got(v)
      end
    end
  end
  if pack.events ~= nil then
    ok, err = check_list(pack.events, "pack.events", check_event_ref)
    if not ok then return nil, err end
  end
  if pack.commands ~= nil then
    if type(pack.commands) ~= "table" then
      return nil, "pack.commands must be a table of commands by name, got "
        .. got(pack.commands)
    end
    for name, cmd in pairs(pack.commands) do
      ok, err = check_command(name, cmd)
      if not ok then return nil, err end
    end
  end
  if pack.health_checks ~= nil then
    if type(pack.health_checks) ~= "table" then
      return nil, "pack.health_checks must be a table of functions by name, "
        .. "got " .. got(pack.health_checks)
    end
    for name, fn in pairs(pack.health_checks) do
      if not is_name(name) then
        return nil, "pack.health_checks keys must be non-empty names, got "
          .. got(name)
      end
      if type(fn) ~= "function" then
        return nil, "pack.health_checks." .. name .. " must be a function, got "
          .. got(fn)
      end
    end
  end
  if pack.observe ~= nil and type(pack.observe) ~= "function" then
    return nil, "pack.observe must be a function, got " .. got(pack.observe)
  end
  return true
end

--- The sorted names of a pack's commands.
function M.command_names(pack)
  local names = {}
  for name in pairs(pack.commands or {}) do names[#names + 1] = name end
  table.sort(names)
  return names
end

local function help_links(url)
  if url == nil then return nil end
  return setmetatable({ { href = url, rel = "help" } }, core.array_mt)
end

local function array(t)
  return setmetatable(t, core.array_mt)
end

--- The registration body (a Lua table ready for the JSON codec).
-- labels: the FLYTE_LABELS pairs as a table; they win over pack.labels.
function M.registration(pack, labels)
  local merged, any = {}, false
  for k, v in pairs(pack.labels or {}) do merged[k], any = v, true end
  for k, v in pairs(labels or {}) do merged[k], any = v, true end

  local events, by_name = array {}, {}
  local function add_event(ref)
    local name = M.event_name(ref)
    local help = type(ref) == "table" and ref.help_url or nil
    local seen = by_name[name]
    if seen then
      if help and not seen.links then seen.links = help_links(help) end
      return
    end
    local event = { name = name, links = help_links(help) }
    by_name[name] = event
    events[#events + 1] = event
  end

  local commands = array {}
  for _, name in ipairs(M.command_names(pack)) do
    local cmd = pack.commands[name]
    local names = array {}
    for i, ref in ipairs(cmd.output_events) do
      names[i] = M.event_name(ref)
      add_event(ref)
    end
    commands[#commands + 1] = { name = name, events = names,
      links = help_links(cmd.help_url) }
  end
  for _, ref in ipairs(pack.events or {}) do add_event(ref) end

  return {
    name = pack.name,
    labels = any and merged or nil,
    commands = commands,
    events = events,
    links = help_links(pack.help_url),
  }
end

return M
