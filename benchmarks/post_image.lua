-- wrk script: POST one image file as the raw body, count responses by status, and print
-- one line "WRK_RESULT {json}" with throughput, latency percentiles and errors.
-- Usage: wrk ... -s post_image.lua http://host:port/predict -- <image file> <content type>
-- The rotation of post_mix.lua (beside this file) through a list of one.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "post_mix.lua")

function init(args)
   prepare({ { path = args[1], content_type = args[2] or "application/octet-stream" } })
end
