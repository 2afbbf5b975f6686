-- Loaded by busted before every spec (see .busted).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
