--- The flyte-shell pack, in Lua: command `shell` runs its input, a script,
-- with bash and answers Output { stdout, stderr, exit_code }.
--
-- A flow sends { "command": "shell", "input": "uname -a" }.
--
-- The script runs with flyte.exec: other actions go on while it runs, the
-- script is given to bash on its standard input (no temporary files, no
-- quoting), and the command's timeout kills it.

local flyte = require "flyte"

local Output = flyte.event_def { name = "Output" }
local Error = flyte.event_def { name = "Error" }

local function run(script)
  if type(script) ~= "string" then
    return Error { error = "input must be a script (a JSON string), got "
      .. type(script) }
  end
  local res, err = flyte.exec { cmd = { "bash", "-s" }, stdin = script }
  if not res then return Error { error = err } end
  return Output {
    stdout = res.stdout,
    stderr = res.stderr,
    exit_code = res.status or 128 + res.signal,
  }
end

return flyte.pack {
  name = "Shell",
  help_url = "https://github.com/ExpediaGroup/flyte-shell",
  commands = {
    shell = {
      output_events = { Output, Error },
      timeout = 600,
      handler = run,
    },
  },
}
