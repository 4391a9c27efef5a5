// Node.js socket.io 4.8, one process, default options.
// node single.js [--port 3000]
const { createServer } = require("node:http");
const { Server } = require("socket.io");
const contract = require("./contract");

const portArg = process.argv.indexOf("--port");
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 3000;
const httpServer = createServer();
const io = new Server(httpServer);
contract(io);
httpServer.listen(port, "127.0.0.1", () => console.log(`LISTENING ${port}`));
process.on("SIGTERM", () => process.exit(0));
