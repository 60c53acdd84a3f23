package main

// projectFile is the measured Compose project: ten services of the test
// image in the shape of a small real stack. db, cache and queue come
// first; api and auth wait for db (and cache) to be healthy; web waits for
// api and auth; workers and the scheduler wait for the queue; the mailer
// only needs the queue started; metrics stands alone. Six have a health
// check every second; 14 containers in all. Both peers read this same
// file.
const projectFile = `x-health: &health
  test: ["CMD", "/echoserver", "get", "http://127.0.0.1:8080/"]
  interval: 1s
  timeout: 1s
  retries: 3
services:
  db:
    image: uncloud-test/echo:1
    pull_policy: never
    healthcheck: *health
  cache:
    image: uncloud-test/echo:1
    pull_policy: never
    healthcheck: *health
  queue:
    image: uncloud-test/echo:1
    pull_policy: never
    healthcheck: *health
  auth:
    image: uncloud-test/echo:1
    pull_policy: never
    healthcheck: *health
    depends_on:
      db: {condition: service_healthy}
  api:
    image: uncloud-test/echo:1
    pull_policy: never
    healthcheck: *health
    deploy: {replicas: 2}
    depends_on:
      db: {condition: service_healthy}
      cache: {condition: service_healthy}
  web:
    image: uncloud-test/echo:1
    pull_policy: never
    healthcheck: *health
    deploy: {replicas: 2}
    depends_on:
      api: {condition: service_healthy}
      auth: {condition: service_healthy}
  worker:
    image: uncloud-test/echo:1
    pull_policy: never
    deploy: {replicas: 2}
    depends_on:
      db: {condition: service_healthy}
      queue: {condition: service_healthy}
  scheduler:
    image: uncloud-test/echo:1
    pull_policy: never
    depends_on:
      queue: {condition: service_healthy}
  mailer:
    image: uncloud-test/echo:1
    pull_policy: never
    depends_on: [queue]
  metrics:
    image: uncloud-test/echo:1
    pull_policy: never
    deploy: {replicas: 2}
`

// services are the project's services with their replicas and whether
// they have a health check: what "all up" means for both peers.
var services = []struct {
	name     string
	replicas int
	health   bool
}{
	{"db", 1, true}, {"cache", 1, true}, {"queue", 1, true}, {"auth", 1, true},
	{"api", 2, true}, {"web", 2, true}, {"worker", 2, false}, {"scheduler", 1, false},
	{"mailer", 1, false}, {"metrics", 2, false},
}

// totalContainers is the number of containers the project runs.
func totalContainers() int {
	n := 0
	for _, s := range services {
		n += s.replicas
	}
	return n
}
