-- End to end: clients that open connections to the health port and never
-- finish a request (a byte now and then) cannot lock the probes out: each
-- address holds at most 16 connections, and a request must arrive whole
-- within 10 s. The slow clients come from 127.0.0.2, the probe from
-- 127.0.0.1, as a kubelet's probes come from the node's own address.
local testing = require "flyte.testing"
local core = require "flyte.core"
local socket = require "socket"

local PER_ADDRESS = 16
local REQUEST_TIME = 10

local function port_of(host)
  return tonumber(host.health_url:match(":(%d+)/"))
end

-- A connection from `from` that sends the start of a request, never its end.
local function slow_client(from, port)
  local c = socket.tcp()
  assert(c:bind(from, 0))
  c:settimeout(2)
  if not c:connect("127.0.0.1", port) then
    c:close()
    return nil
  end
  c:send("GET /live HTTP/1.1\r\nHost: x\r\n")
  return c
end

-- Whether the server closed c (its end of the connection is gone).
local function closed(c)
  c:settimeout(0)
  local _, err = c:receive(1)
  return err == "closed"
end

describe("the health server under slow clients", function()
  it("keeps answering probes, and cuts requests that take too long",
    function()
      local api = testing.api()
      local host = testing.host("spec/fixtures/host/cases.lua", api,
        { FLYTE_OUTBOX = "off" })
      local clients = {}
      finally(function()
        for _, c in ipairs(clients) do c:close() end
        host:stop()
        api:stop()
      end)
      api:wait_registration()
      local port = port_of(host)

      local t0 = core.monotime()
      for _ = 1, 300 do
        local c = slow_client("127.0.0.2", port)
        if c then clients[#clients + 1] = c end
      end
      -- the server keeps 16 of them and closes the others at once
      local open
      testing.wait(function()
        open = 0
        for _, c in ipairs(clients) do
          if not closed(c) then open = open + 1 end
        end
        return open <= PER_ADDRESS
      end, 5, "at most " .. PER_ADDRESS .. " connections from 127.0.0.2")
      assert.is_true(open > 0)

      -- meanwhile a probe is answered, at once
      local p0 = core.monotime()
      local status = testing.get(host.health_url .. "live", 3)
      assert.equal(200, status)
      assert.is_true(core.monotime() - p0 < 2)

      -- a client of the probe's own address that keeps sending a byte
      -- is cut once its request has taken 10 s
      local trickler = slow_client("127.0.0.1", port)
      -- and so is one whose headers came whole but whose body trickles
      local body = socket.tcp()
      assert(body:bind("127.0.0.1", 0))
      body:settimeout(2)
      assert(body:connect("127.0.0.1", port))
      body:send("POST /live HTTP/1.1\r\nHost: x\r\nContent-Length: 100000"
        .. "\r\n\r\n")
      local started = core.monotime()
      local cut = {}
      testing.wait(function()
        for name, c in pairs { headers = trickler, body = body } do
          if not cut[name] then
            c:settimeout(0)
            c:send("X")
            if closed(c) then cut[name] = core.monotime() - started end
          end
        end
        return cut.headers and cut.body
      end, REQUEST_TIME + 5, "the trickling clients to be cut")
      trickler:close()
      body:close()
      for name, took in pairs(cut) do
        assert.is_true(took >= REQUEST_TIME - 1 and took < REQUEST_TIME + 4,
          name .. " cut after " .. took .. " s")
      end
      -- and so are the slow ones from 127.0.0.2
      for _, c in ipairs(clients) do assert.is_true(closed(c)) end
      assert.is_true(core.monotime() - t0 < REQUEST_TIME + 8)
      assert.equal(200, (testing.get(host.health_url .. "live", 3)))
    end)
end)
