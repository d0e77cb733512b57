-- wrk script: POST bodies from a list in rotation, count responses by status, and print one
-- line "WRK_RESULT {json}" with throughput, latency percentiles and errors.
-- Usage: wrk ... -s post_mix.lua http://host:port/predict -- <list file>
-- The list file names one body a line: "<content type><TAB><body file>".
-- Every request is built once, in init(); request() hands out the next one. Each wrk thread
-- starts at its own offset and then takes the list in order; its connections share that
-- rotation, so over a run every body is sent equally often, whatever each one costs.

local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   table.insert(threads, thread)
end

-- Build one request per {content_type, path} entry; start this thread at its own offset.
function prepare(entries)
   requests = {}
   for _, entry in ipairs(entries) do
      local file = assert(io.open(entry.path, "rb"))
      local body = file:read("*a")
      file:close()
      local headers = { ["Content-Type"] = entry.content_type }
      table.insert(requests, wrk.format("POST", nil, headers, body))
   end
   assert(#requests > 0, "no bodies to send")
   -- A stride coprime with most list lengths spreads threads apart (thread_index is 0-based).
   next_request = ((thread_index or 0) * 7919) % #requests
   statuses = {}
end

function read_list(path)
   local entries = {}
   for line in io.lines(path) do
      local content_type, body_path = line:match("^([^\t]+)\t(.+)$")
      if content_type then
         table.insert(entries, { content_type = content_type, path = body_path })
      end
   end
   return entries
end

function init(args)
   prepare(read_list(args[1]))
end

function request()
   next_request = next_request % #requests + 1
   return requests[next_request]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local counts = {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         counts[status] = (counts[status] or 0) + n
      end
   end
   local by_status = {}
   for status, n in pairs(counts) do
      table.insert(by_status, string.format('"%d": %d', status, n))
   end
   local errors = summary.errors
   io.write(string.format(
      'WRK_RESULT {"duration_us": %d, "requests": %d, "statuses": {%s}, ' ..
      '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
      '"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d}}\n',
      summary.duration, summary.requests, table.concat(by_status, ", "),
      errors.connect, errors.read, errors.write, errors.timeout,
      latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(99)))
end
