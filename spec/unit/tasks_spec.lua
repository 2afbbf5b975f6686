-- flyte.testing runs handlers as the host does: as tasks that may wait,
-- spawn, run programs and use the fake clock.
local testing = require "flyte.testing"
local flyte = require "flyte"

describe("handlers in flyte.testing", function()
  local pack = testing.load("spec/fixtures/host/waits.lua")

  it("may spawn tasks and wait for them", function()
    local function spawned()
      local a = flyte.spawn(function(x, y) return x + y end, 1, 2)
      local b = flyte.spawn(function() error("no luck", 0) end)
      return { a = { a:wait() }, b = { b:wait() } }
    end
    local ok, value = require("flyte.core").run(0, spawned)
    assert.is_true(ok)
    assert.same({ a = { true, 3 }, b = { false, "no luck" } }, value)
  end)

  it("runs programs with flyte.exec", function()
    assert.same({ event = "Done", payload = { status = 0, stdout = "hi\n",
      stderr = "", truncated = false } },
      pack:invoke("run", { cmd = { "echo", "hi" } }))
  end)

  it("runs flyte.exec with env over the host's, a cwd, and capped output",
    function()
      local core = require "flyte.core"
      local ok, res = core.run(0, function()
        return flyte.exec { cmd = { "sh", "-c",
          'printf "%s:%s:%s" "$FLYTE_X" "${HOME-unset}" "$(pwd)"; '
          .. 'head -c 1100000 /dev/zero' },
          env = { FLYTE_X = "set", HOME = false }, cwd = "/tmp" }
      end)
      assert.is_true(ok)
      assert.equal(0, res.status)
      assert.equal("set:unset:/tmp", res.stdout:sub(1, 14))
      assert.equal(1024 * 1024, #res.stdout) -- 1 MiB kept, the rest dropped
      assert.is_true(res.truncated)
    end)

  it("says when a program cannot start", function()
    local event = pack:invoke("run", { cmd = { "/no/such/program" } })
    assert.same({ event = "Failed", payload = { error = "flyte.exec: cannot "
      .. "run '/no/such/program': No such file or directory" } }, event)
  end)

  it("cuts a handler at its command's timeout", function()
    assert.same({ event = "FATAL",
      payload = "command 'sort_spin' timed out after 1 s" },
      pack:invoke("sort_spin"))
  end)

  it("raises where waiting is impossible", function()
    local event = pack:invoke("sort_wait")
    assert.is_false(event.payload.ok)
    assert.matches("flyte.sleep cannot wait here", event.payload.error)
  end)

  it("sleeps on the fake clock", function()
    local clock = testing.clock():install()
    local event = pack:invoke("nap", { seconds = 3600 })
    clock:remove()
    assert.same({ event = "Done", payload = { slept = true } }, event)
    assert.equal(3600, clock:elapsed())
  end)

  it("refuses flyte.spawn outside a task", function()
    assert.has_error(function() flyte.spawn(print) end,
      "flyte.spawn: only inside a handler, observe or a health check (in "
      .. "specs, flyte.testing's invoke runs handlers as the host does)")
  end)

  it("checks flyte.exec's options", function()
    assert.has_error(function() flyte.exec { cmd = "ls" } end,
      "flyte.exec: cmd must be a list of strings, the program and its "
      .. "arguments, got string")
    assert.has_error(function() flyte.exec { cmd = { "ls" }, shell = true } end,
      "flyte.exec: unknown option 'shell' (options: cmd, cwd, env, stdin, "
      .. "timeout)")
  end)

  it("refuses to run a task from a finalizer once the state closes",
    function()
      -- the object's finalizer runs after the scheduler's own (finalizers
      -- run newest first when the state closes): it used to find the
      -- freed scheduler (AddressSanitizer: heap-use-after-free)
      local script = testing.tmpname()
      finally(function() os.remove(script) end)
      local f = assert(io.open(script, "w"))
      f:write(string.format("package.cpath = %q .. ';' .. package.cpath\n",
        package.cpath:match("[^;]*build[^;]*%?%.so") or "build/?.so"))
      f:write([[
local core = require "flyte.core"
setmetatable({}, { __gc = function()
  print("finalizer", select(2, core.run(0, function() return 1 end)))
end })
print("first", select(2, core.run(0, function() return 2 end)))
]])
      f:close()
      local p = assert(io.popen("lua5.4 " .. script .. " 2>&1"))
      local out = p:read("a")
      local ok = p:close()
      assert.is_true(ok, out)
      assert.equal("first\t2\nfinalizer\terror\tthe Lua state is closing: "
        .. "nothing can wait here\n", out)
    end)
end)
