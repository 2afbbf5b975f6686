/* lua_sanitized.c - the lua5.4 that `make sanitize` runs the specs with.
 *
 * Runs `lua5.4 SCRIPT ARGS...` as Debian's lua5.4 does (only that form), in
 * a binary linked with the ASan runtime, so that it can load the sanitized
 * flyte/core.so. Debian's lua5.4 is not instrumented: it could load it only
 * with the runtime preloaded, and the preload would reach every program the
 * specs start.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>

/* Adds a traceback to an error, whatever its type (lua.c's msghandler). */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)",
                          luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s SCRIPT [ARGS...]\n", argv[0]);
    return 2;
  }
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create a Lua state\n", argv[0]);
    return 1;
  }
  luaL_openlibs(L);
  /* arg: the script at 0, its arguments from 1 (lua.c's createargtable) */
  lua_createtable(L, argc - 2, 2);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_setglobal(L, "arg");
  if (!lua_checkstack(L, argc)) {
    fprintf(stderr, "%s: too many arguments\n", argv[0]);
    lua_close(L);
    return 1;
  }
  lua_pushcfunction(L, msghandler);
  int rc = luaL_loadfile(L, argv[1]); /* stack: msghandler chunk */
  if (rc == LUA_OK) {
    for (int i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
    rc = lua_pcall(L, argc - 2, 0, 1);
  }
  if (rc != LUA_OK) fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
  lua_close(L);
  return rc == LUA_OK ? 0 : 1;
}
