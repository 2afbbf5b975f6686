-- The shell example pack (flyte-shell in Lua).
local testing = require "flyte.testing"

describe("packs/shell.lua", function()
  local pack = testing.load("packs/shell.lua")

  it("runs a script with bash and returns its output and exit code", function()
    assert.same({ event = "Output", payload = { stdout = "hi\n", stderr = "oops\n",
      exit_code = 3 } }, pack:invoke("shell", "echo hi; echo oops >&2; exit 3"))
  end)

  it("runs bash, not sh", function()
    assert.equal("bash\n", pack:invoke("shell", 'echo "${BASH_VERSION:+bash}"').payload.stdout)
  end)

  it("answers Error when the input is not a script", function()
    assert.same({ event = "Error", payload = {
      error = "input must be a script (a JSON string), got table" } },
      pack:invoke("shell", { cmd = "ls" }))
  end)
end)
