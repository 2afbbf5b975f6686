--- A tiny HTTP server for specs: answers the routes it is given and echoes
-- every other request back as JSON. One connection at a time, each closed
-- after its answer. Needs Debian's lua-socket and lua-cjson; run it with
-- spec/support/stub.lua rather than by hand.
--
--   lua5.4 spec/support/http_stub.lua '{"POST /rest/api/2/issue":
--     {"status": 201, "body": {"id": "10000", "key": "FOO-1"}}}'
--
-- It prints "stub on http://127.0.0.1:PORT" once it listens. A route's
-- answer: status (default 200), headers, body (a string is sent as it is, a
-- table as JSON), delay (seconds to wait first). Any other request is
-- answered 200 with { method, path, query, headers, body } as JSON (header
-- names lower-cased). GET /_stub/requests lists every request but those to
-- /_stub/, oldest first, in the same form.

local socket = require "socket"
local cjson = require "cjson"

local routes = cjson.decode(arg[1] or "{}")
local seen = {}

local REASONS = { [200] = "OK", [201] = "Created", [204] = "No Content",
  [400] = "Bad Request", [401] = "Unauthorized", [404] = "Not Found",
  [500] = "Internal Server Error" }

local function read_request(client)
  local line = client:receive("*l")
  if not line then return nil end
  local method, target = line:match("^(%S+)%s+(%S+)")
  if not method then return nil end
  local path, query = target:match("^([^?]*)%??(.*)$")
  local headers = {}
  while true do
    local h = client:receive("*l")
    if not h or h == "" then break end
    local name, value = h:match("^([^:]+):%s*(.-)%s*$")
    if name then headers[name:lower()] = value end
  end
  local body = ""
  local length = tonumber(headers["content-length"] or "0")
  if length and length > 0 then body = client:receive(length) or "" end
  return { method = method, path = path, query = query, headers = headers,
    body = body }
end

local function answer(client, status, headers, body)
  local lines = { string.format("HTTP/1.1 %d %s", status,
    REASONS[status] or "Status") }
  for name, value in pairs(headers or {}) do
    lines[#lines + 1] = name .. ": " .. value
  end
  lines[#lines + 1] = "Content-Length: " .. #body
  lines[#lines + 1] = "Connection: close"
  client:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. body)
end

local function handle(client)
  local req = read_request(client)
  if not req then return end
  if req.method == "GET" and req.path == "/_stub/requests" then
    answer(client, 200, { ["Content-Type"] = "application/json" },
      #seen == 0 and "[]" or cjson.encode(seen))
    return
  end
  seen[#seen + 1] = req
  local route = routes[req.method .. " " .. req.path]
  if not route then
    answer(client, 200, { ["Content-Type"] = "application/json" },
      cjson.encode(req))
    return
  end
  if route.delay then socket.sleep(route.delay) end
  local body, headers = route.body or "", route.headers or {}
  if type(body) == "table" then
    body = cjson.encode(body)
    headers["Content-Type"] = headers["Content-Type"] or "application/json"
  end
  answer(client, route.status or 200, headers, body)
end

local server = assert(socket.bind("127.0.0.1", 0))
local _, port = server:getsockname()
io.stdout:setvbuf("line")
print("stub on http://127.0.0.1:" .. port)
while true do
  local client = server:accept()
  if client then
    client:settimeout(5)
    handle(client)
    client:close()
  end
end
