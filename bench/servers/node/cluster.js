// Node.js socket.io 4.8 on every core, the docs' multi-core recipe: node:cluster, the
// primary hands each connection to a worker with @socket.io/sticky, and the workers
// share broadcasts through @socket.io/cluster-adapter.
// node cluster.js [--port 3000] [--workers N]   (N defaults to the number of cores)
const cluster = require("node:cluster");
const { createServer } = require("node:http");
const { availableParallelism } = require("node:os");
const { Server } = require("socket.io");
const { setupMaster, setupWorker } = require("@socket.io/sticky");
const { createAdapter, setupPrimary } = require("@socket.io/cluster-adapter");
const contract = require("./contract");

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

if (cluster.isPrimary) {
  const port = arg("--port", 3000);
  const workers = arg("--workers", availableParallelism());
  const httpServer = createServer();
  setupMaster(httpServer, { loadBalancingMethod: "least-connection" });
  setupPrimary();
  cluster.setupPrimary({ serialization: "advanced" });
  let online = 0;
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on("online", () => {
    if (++online === workers) {
      httpServer.listen(port, "127.0.0.1", () => console.log(`LISTENING ${port}`));
    }
  });
  process.on("SIGTERM", () => {
    for (const w of Object.values(cluster.workers)) w.process.kill("SIGTERM");
    process.exit(0);
  });
} else {
  const httpServer = createServer();
  const io = new Server(httpServer);
  io.adapter(createAdapter());
  contract(io);
  setupWorker(io);
  process.on("SIGTERM", () => process.exit(0));
}
