--- flyte.http: an HTTP client for pack code, on libcurl.
--
--   local res, err = flyte.http.request {
--     method = "POST", url = "https://jira/rest/api/2/issue",
--     headers = { Authorization = "Basic ..." },
--     body = { fields = { ... } },          -- a table is sent as JSON
--     query = { expand = "names" },         -- appended to the URL
--     timeout = 10,                         -- seconds
--   }
--   -- res = { status = 201, headers = { ["content-type"] = ... }, body = "..." }
--
-- A network failure returns nil and a message; it never raises. TLS is
-- verified. Inside a handler the command's timeout applies too.

local core = require "flyte.core"

local M = {}

local function escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

local function with_query(url, query)
  local keys = {}
  for k in pairs(query) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    parts[#parts + 1] = escape(k) .. "=" .. escape(query[k])
  end
  if #parts == 0 then return url end
  return url .. (url:find("?", 1, true) and "&" or "?")
    .. table.concat(parts, "&")
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

function M.request(opts)
  if type(opts) ~= "table" then
    error("flyte.http.request: expected a table of options, got "
      .. type(opts), 2)
  end
  local url = opts.url
  if type(url) ~= "string" or not url:match("^https?://") then
    error("flyte.http.request: url must be an http:// or https:// URL, got "
      .. tostring(url), 2)
  end
  local method = (opts.method or "GET"):upper()
  if opts.query ~= nil then
    if type(opts.query) ~= "table" then
      error("flyte.http.request: query must be a table, got "
        .. type(opts.query), 2)
    end
    url = with_query(url, opts.query)
  end
  local lines, has_type = {}, false
  for name, value in pairs(opts.headers or {}) do
    if type(name) ~= "string" or (type(value) ~= "string"
        and type(value) ~= "number") then
      error("flyte.http.request: headers must map names to strings", 2)
    end
    if name:lower() == "content-type" then has_type = true end
    lines[#lines + 1] = name .. ": " .. value
  end
  local body = opts.body
  if type(body) == "table" then
    local ok, text = pcall(core.json_encode, body)
    if not ok then
      error("flyte.http.request: body cannot be encoded as JSON: " .. text, 2)
    end
    body = text
    if not has_type then lines[#lines + 1] = "Content-Type: application/json" end
  elseif body ~= nil and type(body) ~= "string" then
    error("flyte.http.request: body must be a string or a table, got "
      .. type(body), 2)
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number"
      or opts.timeout <= 0) then
    error("flyte.http.request: timeout must be a positive number of seconds",
      2)
  end
  local status, raw, text = core.http_request(method, url, lines, body,
    opts.timeout)
  if not status then return nil, raw end
  return { status = status, headers = parse_headers(raw), body = text }
end

return M
