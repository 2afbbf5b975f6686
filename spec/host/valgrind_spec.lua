-- An end-to-end run under valgrind: actions (good and failing), events, a
-- reload and a clean stop, with no memory errors and no leaks.
local testing = require "flyte.testing"

local function have_valgrind()
  return os.execute("command -v valgrind >/dev/null 2>&1")
end

describe("flyte-host under valgrind", function()
  it("reports no errors and no leaks across actions, events, a reload and a stop",
    function()
      if not have_valgrind() then
        pending("valgrind is not installed")
        return
      end
      if os.getenv("ASAN_OPTIONS") then
        pending("make sanitize: valgrind cannot run an AddressSanitizer build")
        return
      end
      local dir = assert(io.popen("mktemp -d /tmp/flyte-valgrind.XXXXXX")):read("l")
      local pack = dir .. "/cases.lua"
      assert(os.execute("cp spec/fixtures/host/cases.lua " .. pack))
      local api = testing.api()
      local vlog = dir .. "/valgrind.log"
      local host = testing.spawn({ "valgrind", "--leak-check=full",
        "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
        "--log-file=" .. vlog, testing.binary(), "run", pack }, {
          FLYTE_API = api.url, FLYTE_POLL_INTERVAL = "0.5", FLYTE_HEALTH_PORT = "0",
          FLYTE_OUTBOX = dir .. "/outbox", FLYTE_WORKERS = "2" })
      api:wait_registration(60)
      for _, command in ipairs { "echo", "boom", "nothing", "unencodable", "send" } do
        api:wait_result(api:enqueue(command, 1, "Cases.team.ops"), 30)
      end
      api:wait_events(1, 30)
      -- a reload: every state is rebuilt and the old ones closed
      local f = assert(io.open(pack, "a"))
      f:write("\n-- edited\n")
      f:close()
      host:wait_log("reloaded [^\n]+", 30)
      api:wait_result(api:enqueue("echo", 2, "Cases.team.ops"), 30)
      assert.equal(0, host:stop(60))
      local text = assert(io.open(vlog)):read("a")
      api:stop()
      os.execute("rm -rf " .. dir)
      assert.matches("ERROR SUMMARY: 0 errors", text)
      assert.matches("in use at exit: 0 bytes in 0 blocks", text)
      assert.is_nil(text:match("definitely lost: [%d,]*[1-9]"))
      assert.is_nil(text:match("indirectly lost: [%d,]*[1-9]"))
    end)
end)
