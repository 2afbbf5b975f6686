-- flyte.json, the exact codec (pack-api.md, "JSON is exact").
-- Round trips read their input and expected output from spec/fixtures/json/.

local flyte = require "flyte"
local json = flyte.json

local FIXTURES = "spec/fixtures/json/"

-- The text of a fixture file, without its final newline.
local function fixture(name)
  local file = assert(io.open(FIXTURES .. name, "rb"))
  local text = file:read("a")
  file:close()
  return (text:gsub("\n$", ""))
end

-- `depth` tables, each the only item of the one around it.
local function nested(depth)
  local root = {}
  local t = root
  for _ = 2, depth do
    t[1] = {}
    t = t[1]
  end
  return root
end

describe("flyte.json", function()
  describe("round trip", function()
    local cases = {
      { "integers", "keeps integers exact over the whole 64-bit range" },
      { "floats", "writes floats in the fewest digits that read back the same" },
      { "empties", "keeps [] and {} distinct at every depth" },
      { "nulls", "keeps null in objects and arrays, and the arrays' length" },
      { "strings", "passes UTF-8 through and reads every escape" },
    }
    for _, case in ipairs(cases) do
      local name, sentence = case[1], case[2]

      it(sentence .. " (" .. name .. ".json)", function()
        local value = assert(json.decode(fixture(name .. ".json")))
        assert.equal(fixture(name .. ".expected.json"), json.encode(value))
      end)

      it("re-encodes " .. name .. ".expected.json unchanged", function()
        local text = fixture(name .. ".expected.json")
        assert.equal(text, json.encode(assert(json.decode(text))))
      end)
    end
  end)

  describe("integers", function()
    it("decodes 9223372036854775807 as the Lua integer math.maxinteger", function()
      local value = json.decode("9223372036854775807")
      assert.equal(math.maxinteger, value)
      assert.equal("integer", math.type(value))
    end)

    it("decodes -9223372036854775808 as the Lua integer math.mininteger", function()
      local value = json.decode("-9223372036854775808")
      assert.equal(math.mininteger, value)
      assert.equal("integer", math.type(value))
    end)

    it("decodes 5 as the integer 5, not 5.0", function()
      local value = json.decode("5")
      assert.equal(5, value)
      assert.equal("integer", math.type(value))
    end)

    it("decodes 5.0 as a float", function()
      assert.equal("float", math.type(json.decode("5.0")))
    end)

    it("encodes math.maxinteger and math.mininteger digit for digit", function()
      assert.equal("9223372036854775807", json.encode(math.maxinteger))
      assert.equal("-9223372036854775808", json.encode(math.mininteger))
    end)

    it("refuses an integer above 2^63-1 with a clear message", function()
      local value, err = json.decode("9223372036854775808")
      assert.is_nil(value)
      assert.equal("invalid JSON at line 1, column 19: too big integer "
        .. "near '9223372036854775808'", err)
    end)

    it("refuses an integer below -2^63 with a clear message", function()
      local value, err = json.decode("-9223372036854775809")
      assert.is_nil(value)
      assert.equal("invalid JSON at line 1, column 20: too big negative integer "
        .. "near '-9223372036854775809'", err)
    end)
  end)

  describe("floats", function()
    it("encodes 0.1 in its shortest form", function()
      assert.equal("0.1", json.encode(0.1))
    end)

    it("reads back 0.1 as the same double", function()
      local value = json.decode(json.encode(0.1))
      assert.equal(0.1, value)
      assert.equal("float", math.type(value))
    end)

    it("reads back 1/3 as the same double", function()
      assert.equal(1 / 3, json.decode(json.encode(1 / 3)))
    end)

    it("encodes 1.0 as 1.0 so that it reads back as a float", function()
      assert.equal("1.0", json.encode(1.0))
      assert.equal("float", math.type(json.decode(json.encode(1.0))))
    end)

    it("encodes the smallest subnormal in its fewest digits, 5e-324", function()
      assert.equal("5e-324", json.encode(5e-324))
    end)

    it("refuses to encode NaN", function()
      assert.has_error(function() json.encode(0 / 0) end,
        "flyte.json.encode: cannot encode NaN (JSON has no such number)")
    end)

    it("refuses to encode infinity", function()
      assert.has_error(function() json.encode(math.huge) end,
        "flyte.json.encode: cannot encode an infinite number")
    end)

    it("refuses to encode minus infinity", function()
      assert.has_error(function() json.encode(-math.huge) end,
        "flyte.json.encode: cannot encode an infinite number")
    end)

    it("names the path of a NaN inside a table", function()
      assert.has_error(function() json.encode { stats = { mean = 0 / 0 } } end,
        "flyte.json.encode: stats.mean: cannot encode NaN (JSON has no such number)")
    end)
  end)

  describe("arrays and objects", function()
    it("decodes [] as an empty table marked as an array", function()
      local value = json.decode("[]")
      assert.same({}, value)
      assert.is_true(json.is_array(value))
    end)

    it("decodes {} as an empty table with no array marker", function()
      local value = json.decode("{}")
      assert.same({}, value)
      assert.is_false(json.is_array(value))
    end)

    it("marks arrays nested inside a decoded value", function()
      local value = json.decode('{"outer": [[], {}]}')
      assert.is_true(json.is_array(value.outer))
      assert.is_true(json.is_array(value.outer[1]))
      assert.is_false(json.is_array(value.outer[2]))
    end)

    it("encodes a decoded [] back as []", function()
      assert.equal("[]", json.encode(json.decode("[]")))
    end)

    it("encodes flyte.array{} as []", function()
      assert.equal("[]", json.encode(flyte.array {}))
    end)

    it("encodes a plain empty table as {}", function()
      assert.equal("{}", json.encode({}))
    end)

    it("encodes a table with keys 1..n as an array", function()
      assert.equal('[1,"two",true]', json.encode { 1, "two", true })
    end)

    it("writes object keys in byte order", function()
      assert.equal('{"10":4,"9":5,"B":3,"a":2,"b":1}',
        json.encode { b = 1, a = 2, B = 3, ["10"] = 4, ["9"] = 5 })
    end)

    it("refuses a table that mixes string keys and array items", function()
      assert.has_error(function() json.encode { 1, 2, name = "x" } end,
        "flyte.json.encode: cannot encode a table with both string keys and array items")
    end)

    it("refuses an array with holes", function()
      assert.has_error(function() json.encode { 1, nil, 3 } end,
        "flyte.json.encode: cannot encode an array with holes "
          .. "(use flyte.null for missing items)")
    end)

    it("refuses table keys that are not strings or positive integers", function()
      for _, key in ipairs { 0, -1, 1.5, true } do
        assert.has_error(function() json.encode { [key] = "x" } end,
          "flyte.json.encode: cannot encode a table key that is not a string "
            .. "or a positive integer")
      end
    end)

    it("refuses a marked array that also has string keys", function()
      local list = json.decode("[1]")
      list.extra = 2
      assert.has_error(function() json.encode(list) end,
        "flyte.json.encode: cannot encode a table with both string keys and array items")
    end)

    it("refuses a marked array whose holes are far more than its items", function()
      local list = json.decode("[1]")
      list[50000000] = 2
      assert.has_error(function() json.encode(list) end,
        "flyte.json.encode: cannot encode an array with holes "
          .. "(use flyte.null for missing items)")
    end)

    it("writes the holes of a marked array as null rather than dropping items", function()
      assert.equal('["a",null,"c"]', json.encode(flyte.array { [1] = "a", [3] = "c" }))
      assert.equal("[null,1]", json.encode(flyte.array { [2] = 1 }))
    end)
  end)

  describe("null", function()
    it("decodes null as flyte.null", function()
      assert.equal(flyte.null, json.decode("null"))
      assert.equal(flyte.null, json.null)
    end)

    it("decodes null inside an object as flyte.null", function()
      assert.equal(flyte.null, json.decode('{"a": null}').a)
    end)

    it("keeps the length of [null,1,null]", function()
      local value = json.decode("[null,1,null]")
      assert.equal(3, #value)
      assert.same({ flyte.null, 1, flyte.null }, value)
    end)

    it("encodes flyte.null as null in arrays and objects", function()
      assert.equal('{"a":null,"list":[null,1,null]}',
        json.encode { a = flyte.null, list = { flyte.null, 1, flyte.null } })
    end)

    it("encodes nil as null", function()
      assert.equal("null", json.encode(nil))
    end)
  end)

  describe("strings", function()
    it("passes UTF-8 through unescaped", function()
      assert.equal('"café 😀"', json.encode("café 😀"))
    end)

    it("decodes a \\u escape to its UTF-8 bytes", function()
      assert.equal("caf\xc3\xa9", json.decode('"caf\\u00e9"'))
    end)

    it("decodes a surrogate pair to one four-byte character", function()
      assert.equal("\xf0\x9f\x98\x80", json.decode('"\\ud83d\\ude00"'))
    end)

    it("refuses a lone surrogate", function()
      local value, err = json.decode('"\\ud83d"')
      assert.is_nil(value)
      assert.equal("invalid JSON at line 1, column 8: invalid Unicode '\\uD83D' "
        .. "near '\"\\ud83d\"'", err)
    end)

    it("decodes \\u0000 inside a string to a zero byte", function()
      assert.equal("a\0b", json.decode('"a\\u0000b"'))
    end)

    it("encodes a zero byte as \\u0000", function()
      assert.equal('"a\\u0000b"', json.encode("a\0b"))
    end)

    it("escapes control characters", function()
      assert.equal('"\\u0001\\u001f\\b\\f\\n\\r\\t"', json.encode("\1\31\b\f\n\r\t"))
    end)

    it("escapes quotes and backslashes", function()
      assert.equal('"say \\"hi\\" \\\\"', json.encode('say "hi" \\'))
    end)

    it("does not escape /", function()
      assert.equal('"a/b"', json.encode("a/b"))
    end)

    it("refuses to encode a string that is not valid UTF-8, naming the byte", function()
      assert.has_error(function() json.encode("ok\xff") end,
        "flyte.json.encode: string is not valid UTF-8 (bad byte 0xff at offset 2)")
    end)

    it("refuses to encode overlong UTF-8", function()
      assert.has_error(function() json.encode("\xc0\xaf") end,
        "flyte.json.encode: string is not valid UTF-8 (bad byte 0xc0 at offset 0)")
    end)

    it("refuses to encode a UTF-8 encoded surrogate", function()
      assert.has_error(function() json.encode("\xed\xa0\x80") end,
        "flyte.json.encode: string is not valid UTF-8 (bad byte 0xed at offset 0)")
    end)

    it("names the path of a string that is not valid UTF-8", function()
      assert.has_error(function() json.encode { x = { "ok", "\xe9" } } end,
        "flyte.json.encode: x[2]: string is not valid UTF-8 (bad byte 0xe9 at offset 0)")
    end)

    it("refuses JSON text that is not valid UTF-8", function()
      local value, err = json.decode('"\xff"')
      assert.is_nil(value)
      assert.equal("invalid JSON at line 1, column 1: unable to decode byte 0xff "
        .. "near '\"'", err)
    end)

    it("refuses a raw NUL byte, even after a complete value", function()
      assert.same({ nil, "invalid JSON: a NUL byte at offset 3" },
        { json.decode("123\0") })
      assert.same({ nil, "invalid JSON: a NUL byte at offset 2" },
        { json.decode('"a\0b"') })
    end)

    it("decodes an object key holding \\u0000 to a key with that byte", function()
      assert.same({ ["a\0b"] = 1 }, json.decode('{"a\\u0000b":1}'))
      -- nested, several, beside plain keys, and in arrays of objects
      assert.same({ x = { ["\0"] = { 1, { ["k\0"] = true } }, y = "\0" } },
        json.decode('{"x":{"\\u0000":[1,{"k\\u0000":true}],"y":"\\u0000"}}'))
      -- a key that looks like the decoder's own placeholder stays itself
      local tricky = '{"\\ue000flyte-nul-key-0-0":1,"a\\u0000":2}'
      assert.same({ ["\u{e000}flyte-nul-key-0-0"] = 1, ["a\0"] = 2 },
        json.decode(tricky))
    end)

    it("encodes a key with a zero byte as \\u0000, and back", function()
      assert.equal('{"a\\u0000b":1}', json.encode { ["a\0b"] = 1 })
      local value = { ["\0"] = { ["x\0y"] = "z\0" } }
      assert.same(value, json.decode(json.encode(value)))
    end)
  end)

  describe("nesting", function()
    it("documents its depth limit as flyte.json.max_depth, 1000", function()
      assert.equal(1000, json.max_depth)
    end)

    it("decodes arrays nested 1000 deep", function()
      local value = json.decode(("["):rep(1000) .. ("]"):rep(1000))
      assert.is_true(json.is_array(value))
    end)

    it("refuses arrays nested 1001 deep with a clear message", function()
      local value, err = json.decode(("["):rep(1001) .. ("]"):rep(1001))
      assert.is_nil(value)
      assert.equal("invalid JSON: nested deeper than 1000 levels", err)
    end)

    it("refuses objects nested 1001 deep with a clear message", function()
      local value, err = json.decode(('{"a":'):rep(1001) .. "1" .. ("}"):rep(1001))
      assert.is_nil(value)
      assert.equal("invalid JSON: nested deeper than 1000 levels", err)
    end)

    it("refuses JSON nested 100000 deep without crashing", function()
      local value, err = json.decode(("["):rep(100000) .. ("]"):rep(100000))
      assert.is_nil(value)
      assert.equal("invalid JSON: nested deeper than 1000 levels", err)
    end)

    it("encodes tables nested 1000 deep", function()
      assert.equal(("["):rep(999) .. "{}" .. ("]"):rep(999), json.encode(nested(1000)))
    end)

    it("refuses tables nested 1001 deep, naming the path", function()
      -- The path is cut at 255 characters.
      assert.has_error(function() json.encode(nested(1001)) end,
        "flyte.json.encode: " .. ("[1]"):rep(85)
          .. ": nested deeper than 1000 levels (a table that contains itself?)")
    end)

    it("refuses a table that contains itself with a clear error", function()
      local loop = {}
      loop.self = loop
      assert.has_error(function() json.encode(loop) end,
        "flyte.json.encode: " .. ("self."):rep(51)
          .. ": nested deeper than 1000 levels (a table that contains itself?)")
    end)
  end)

  describe("invalid JSON", function()
    local cases = {
      { "[1,2,]", "a trailing comma in an array",
        "invalid JSON at line 1, column 6: unexpected token near ']'" },
      { '{"a":1,}', "a trailing comma in an object",
        "invalid JSON at line 1, column 8: string or '}' expected near '}'" },
      { "{'a':1}", "single quotes",
        "invalid JSON at line 1, column 2: string or '}' expected near '''" },
      { "NaN", "NaN",
        "invalid JSON at line 1, column 3: invalid token near 'NaN'" },
      { "Infinity", "Infinity",
        "invalid JSON at line 1, column 8: invalid token near 'Infinity'" },
      { "[1] x", "trailing garbage",
        "invalid JSON at line 1, column 5: end of file expected near 'x'" },
      { "", "an empty string",
        "invalid JSON at line 1, column 0: unexpected token near end of file" },
      { "[", "an unclosed array",
        "invalid JSON at line 1, column 1: ']' expected near end of file" },
      { '"\\x"', "an unknown escape",
        "invalid JSON at line 1, column 3: invalid escape near '\"\\x'" },
    }
    for _, case in ipairs(cases) do
      local text, what, message = case[1], case[2], case[3]
      it("returns nil and a message for " .. what, function()
        local value, err = json.decode(text)
        assert.is_nil(value)
        assert.equal(message, err)
      end)
    end

    it("raises when given something other than a string", function()
      assert.has_error(function() json.decode(5) end,
        "flyte.json.decode: expected a string, got number")
    end)
  end)

  describe("encode errors", function()
    it("names the path of a value it cannot encode", function()
      assert.has_error(function() json.encode { payload = { items = { 1, print } } } end,
        "flyte.json.encode: payload.items[2]: cannot encode a function")
    end)

    it("names array indexes from 1 at every depth", function()
      assert.has_error(function() json.encode { { 1, { 1, 2, print } } } end,
        "flyte.json.encode: [1][2][3]: cannot encode a function")
    end)

    it("refuses a function at the top level without a path", function()
      assert.has_error(function() json.encode(print) end,
        "flyte.json.encode: cannot encode a function")
    end)

    it("refuses a coroutine", function()
      assert.has_error(function() json.encode(coroutine.create(print)) end,
        "flyte.json.encode: cannot encode a thread")
    end)

    it("refuses a full userdata", function()
      assert.has_error(function() json.encode(io.stdout) end,
        "flyte.json.encode: cannot encode a userdata")
    end)

    it("points its error at the line that called it", function()
      local here = debug.getinfo(1, "S").short_src
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() json.encode(print) end)
      assert.is_false(ok)
      assert.equal(here .. ":" .. line .. ": flyte.json.encode: cannot encode a function",
        err)
    end)
  end)

  describe("pretty printing", function()
    it("indents with two spaces and writes sorted keys", function()
      local value = assert(json.decode(fixture("pretty.json")))
      assert.equal(fixture("pretty.expected.json"), json.encode(value, { pretty = true }))
    end)

    it("writes empty tables as {} and []", function()
      assert.equal("{}", json.encode({}, { pretty = true }))
      assert.equal("[]", json.encode(flyte.array {}, { pretty = true }))
    end)

    it("writes compact JSON when pretty is false", function()
      assert.equal('{"a":[1,2]}', json.encode({ a = { 1, 2 } }, { pretty = false }))
    end)
  end)
end)
