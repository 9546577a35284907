// The Socket.IO 4 comparison server of scripts/bench_e2e.py: rooms of one publisher and N
// subscribers. A client connects with ?room=R&role=pub|sub (WebSocket transport only); a
// subscriber joins R; a publisher's `turn` event is re-emitted to everyone in R.
// Usage: node socketio_server.js PORT   (prints "listening PORT" once it accepts connections)
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 0);
const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
  maxHttpBufferSize: 65536,
});

io.on("connection", (socket) => {
  const { room, role } = socket.handshake.query;
  if (typeof room !== "string" || !room) {
    socket.disconnect(true);
    return;
  }
  if (role === "pub") {
    // The payload is parsed and re-encoded by Socket.IO, as a real app's broadcast would be.
    socket.on("turn", (payload) => io.to(room).emit("turn", payload));
  } else {
    socket.join(room);
  }
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`listening ${httpServer.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
