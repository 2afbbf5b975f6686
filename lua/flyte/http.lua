--- flyte.http: an HTTP client for pack code, on libcurl.
--
--   local res, err = flyte.http.request {
--     method = "POST", url = "https://jira/rest/api/2/issue",
--     headers = { Authorization = "Basic ..." },
--     body = { fields = { ... } },          -- a table is sent as JSON
--     query = { expand = "names" },         -- appended to the URL, escaped
--     timeout = 10,                         -- seconds (default 30)
--   }
--   -- res = { status = 201, headers = { ["content-type"] = ... }, body = "..." }
--
-- Any status is a response (check res.status); a request that gets none
-- (refused, timed out, TLS failed) returns nil and a message, never raises.
-- A mistake in the options raises, pointing at the caller's line. TLS is
-- verified. Inside a handler the command's timeout applies too.
--
-- method: a name, default "GET"; GET and HEAD take no body. query: names to
-- strings, numbers, booleans or lists of them (a list repeats the name),
-- sorted by name. headers: names to strings or numbers; "" sends the header
-- empty. body: a string is sent as it is (libcurl then says Content-Type:
-- application/x-www-form-urlencoded unless headers set one), a table as
-- JSON with Content-Type: application/json. Response header names are
-- lower-cased; repeated ones are joined with ", ".

local core = require "flyte.core"
local options = require "flyte.options"

local M = {}

local OPTIONS = { method = true, url = true, headers = true, body = true,
  query = true, timeout = true }

-- What may stand in a header name (RFC 9110's token).
local TOKEN = "^[%w!#$%%&'*+%-.^_`|~]+$"

local function escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

local function is_scalar(v)
  local t = type(v)
  return t == "string" or t == "number" or t == "boolean"
end

-- "k=v&k=v" from a table of names to values (or lists of values), names
-- sorted so the same table always gives the same URL.
local function encode_query(query)
  local keys = {}
  for k, v in pairs(query) do
    if type(k) ~= "string" then
      return nil, "query keys must be strings, got " .. type(k)
    end
    if not is_scalar(v) then
      local ok = type(v) == "table" -- a list; {} adds nothing
      for i, item in pairs(ok and v or {}) do
        if math.type(i) ~= "integer" or i < 1 or i > #v
            or not is_scalar(item) then
          ok = false
          break
        end
      end
      if not ok then
        return nil, "query." .. k .. " must be a string, a number, a boolean "
          .. "or a list of them, got " .. type(v)
      end
    end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = query[k]
    for _, item in ipairs(type(v) == "table" and v or { v }) do
      parts[#parts + 1] = escape(k) .. "=" .. escape(item)
    end
  end
  return table.concat(parts, "&")
end

-- The URL with the query appended (before any #fragment).
local function with_query(url, query)
  local text, err = encode_query(query)
  if not text then return nil, err end
  if text == "" then return url end
  local base, fragment = url:match("^([^#]*)(.*)$")
  local sep = base:find("?", 1, true) and "&" or "?"
  if base:sub(-1) == "?" or base:sub(-1) == "&" then sep = "" end
  return base .. sep .. text .. fragment
end

-- "Name: value" lines from a table of headers, and whether one of them is
-- Content-Type; or nil and what is wrong.
local function header_lines(headers)
  local lines, has_type = {}, false
  for name, value in pairs(headers) do
    if type(name) ~= "string" or not name:match(TOKEN) then
      return nil, "header names must be strings of letters, digits and -, "
        .. "got " .. (type(name) == "string" and string.format("%q", name)
          or type(name))
    end
    if type(value) ~= "string" and type(value) ~= "number" then
      return nil, "headers." .. name .. " must be a string or a number, got "
        .. type(value)
    end
    value = tostring(value)
    if value:find("[\r\n%z]") then
      return nil, "headers." .. name .. " must not contain a line break"
    end
    if name:lower() == "content-type" then has_type = true end
    -- libcurl drops a header given as "Name:"; "Name;" sends it empty
    lines[#lines + 1] = value == "" and name .. ";" or name .. ": " .. value
  end
  table.sort(lines)
  return lines, has_type
end

local function parse_headers(raw)
  local headers = {}
  for line in raw:gmatch("[^\r\n]+") do
    local name, value = line:match("^([^:%s]+)%s*:%s*(.-)%s*$")
    if name then
      name = name:lower()
      if headers[name] then
        headers[name] = headers[name] .. ", " .. value
      else
        headers[name] = value
      end
    end
  end
  return headers
end

--- Sends a request; returns { status, headers, body }, or nil and a
-- message when no response came (refused, timed out, TLS failed...) or
-- the URL is not one it can use (a URL often comes from an action's
-- input: the handler answers with its own failure event, as for a
-- refused connection). Raises for a mistake in the code: an unknown
-- option, an option of the wrong type, a body on a GET.
function M.request(opts)
  local function fail(msg)
    error("flyte.http.request: " .. msg, 3)
  end
  local bad = options.unknown(opts, OPTIONS)
  if bad then fail(bad) end
  local url = opts.url
  if type(url) ~= "string" then
    fail("url must be a string, got " .. type(url))
  end
  local method = opts.method or "GET"
  if type(method) ~= "string" or not method:match("^%a+$") then
    fail("method must be a name such as \"GET\" or \"POST\", got "
      .. (type(method) == "string" and string.format("%q", method)
        or type(method)))
  end
  method = method:upper()
  if opts.query ~= nil then
    if type(opts.query) ~= "table" then
      fail("query must be a table, got " .. type(opts.query))
    end
    local err
    url, err = with_query(url, opts.query)
    if not url then fail(err) end
  end
  if opts.headers ~= nil and type(opts.headers) ~= "table" then
    fail("headers must be a table, got " .. type(opts.headers))
  end
  local lines, has_type = header_lines(opts.headers or {})
  if not lines then fail(has_type) end
  local body = opts.body
  if type(body) == "table" then
    local ok, text = pcall(core.json_encode, body)
    if not ok then fail("body cannot be encoded as JSON: " .. text) end
    body = text
    if not has_type then lines[#lines + 1] = "Content-Type: application/json" end
  elseif body ~= nil and type(body) ~= "string" then
    fail("body must be a string or a table, got " .. type(body))
  end
  if body ~= nil and (method == "GET" or method == "HEAD") then
    fail("a " .. method .. " request cannot have a body")
  end
  local timeout = opts.timeout
  bad = options.timeout(timeout)
  if bad then fail(bad) end
  -- what the URL says, checked once the code's own mistakes are ruled out
  if not url:match("^https?://[^/?#]") then
    return nil, "flyte.http.request: url must be an http:// or https:// "
      .. "URL, got " .. string.format("%q", url)
  end
  if url:find("[%s%c]") then
    return nil, "flyte.http.request: url must not contain spaces or control "
      .. "characters (escape them, or pass them in query), got "
      .. string.format("%q", url)
  end
  -- the host counts in milliseconds, and 0 would mean its default
  if timeout then timeout = math.max(timeout, 0.001) end
  local status, raw, text = core.http_request(method, url, lines, body,
    timeout)
  if not status then
    -- keep credentials given in the URL (user:password@) out of the message
    return nil, (raw:gsub("^(%S+ https?://)[^/?#@]*@", "%1"))
  end
  return { status = status, headers = parse_headers(raw), body = text }
end

return M
