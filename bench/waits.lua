-- The benchmark's pack for handlers that wait (bench/bench.lua, section
-- waits): `fetch` makes one HTTP request to input.url (the stand-in's
-- /dev/slow, answering after 100 ms), `nap` sleeps input.seconds, `run`
-- runs input.cmd with flyte.exec, `echo` answers at once.
local flyte = require "flyte"

local Echoed = flyte.event_def { name = "Echoed" }
local Failed = flyte.event_def { name = "Failed" }

return flyte.pack {
  name = "BenchWaits",
  commands = {
    echo = {
      output_events = { Echoed },
      handler = function(input) return Echoed(input) end,
    },
    fetch = {
      output_events = { Echoed, Failed },
      handler = function(input)
        local res, err = flyte.http.request { url = input.url }
        if not res then return Failed { error = err } end
        return Echoed { status = res.status }
      end,
    },
    nap = {
      output_events = { Echoed },
      handler = function(input)
        flyte.sleep(input.seconds)
        return Echoed {}
      end,
    },
    run = {
      output_events = { Echoed, Failed },
      handler = function(input)
        local res, err = flyte.exec { cmd = input.cmd }
        if not res then return Failed { error = err } end
        return Echoed { status = res.status }
      end,
    },
  },
}
