// The benchmark contract on namespace "/": join(room, ack?), broadcast(payload) -> "tick" to
// room "bench", echo(payload, ack).
module.exports = function contract(io) {
  io.on("connection", (socket) => {
    // Acked when the client asks for it (the load generator waits for the ack).
    socket.on("join", (room, ack) => {
      socket.join(room);
      if (typeof ack === "function") ack();
    });
    socket.on("broadcast", (payload) => io.to("bench").emit("tick", payload));
    socket.on("echo", (payload, ack) => {
      if (typeof ack === "function") ack(payload);
    });
  });
};
