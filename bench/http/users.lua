-- users.lua: wrk script for GET /users/:id over a hot set of ids 1..1000 (uniformly random).
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/users/" .. math.random(1, 1000))
end
