// The page's one websocket: events of the workspace as they happen, and, after a drop, every
// event it missed (resync from the last event id it saw), so the page never needs a reload.
import {socket} from "./api.js";

export class Live {
  constructor({workspace, onEvent, onState, onResyncOverflow}) {
    this.workspace = workspace;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onResyncOverflow = onResyncOverflow;
    this.lastEventId = null;
    this.retry = 0;
    this.ws = null;
    setInterval(() => this.send({type: "ping"}), 30000);
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.ws = new WebSocket(`${scheme}://${location.host}/ws/?workspace=${encodeURIComponent(this.workspace)}`);
    this.onState("connecting");
    this.ws.onmessage = (message) => this.receive(JSON.parse(message.data));
    this.ws.onclose = () => {
      this.onState("offline");
      if (this.paused) return;
      this.retry = Math.min(this.retry + 1, 5);
      setTimeout(() => this.connect(), 400 * 2 ** this.retry);
    };
  }

  receive(frame) {
    if (frame.type === "hello") {
      socket.id = frame.socket_id;
      this.retry = 0;
      this.onState("online");
      if (this.lastEventId === null) this.lastEventId = frame.last_event_id;
      else this.send({type: "resync", since: this.lastEventId});
      return;
    }
    if (frame.type === "resync") {
      frame.events.forEach((event) => this.dispatch(event));
      if (frame.events.length >= 1000) this.onResyncOverflow();
      return;
    }
    if (frame.type === "events") {  // a batch of inbound deliveries, in order, in one frame
      frame.events.forEach((event) => this.dispatch(event));
      return;
    }
    if (frame.type === "pong" || frame.type === "error") return;
    this.dispatch(frame);
  }

  dispatch(event) {
    if (event.id) this.lastEventId = event.id;
    if (event.origin && event.origin === socket.id) return;
    this.onEvent(event);
  }

  // A dropped network, on purpose (tests, and a person who wants to see catch-up work).
  pause() {
    this.paused = true;
    if (this.ws) this.ws.close();
  }

  resume() {
    this.paused = false;
    this.connect();
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }
}
