// Replay of a finished battle from its event log (GET /api/battles/{room}/events): the same
// view, fed the same events, on a virtual clock that runs at the chosen speed. Long waits
// (an agent thinking, the voting period) are shortened to at most MAX_GAP_MS of battle time.

const $ = (id) => document.getElementById(id);
const MAX_GAP_MS = 1500;
const TICK_MS = 50;

export class Replay {
  constructor(view, events) {
    this.view = view;
    this.events = events;
    this.index = 0;
    this.playing = false;
    this.speed = 1;
    this.virtualNow = events.length ? events[0].at : Date.now();
    this.timer = null;
    this.lastTick = 0;
  }

  /** Switch the view to the replay's clock (from the first replay action on). */
  activate() {
    if (this.view.replaying) return;
    this.view.replaying = true;
    this.view.clock = () => this.virtualNow;
    this.view.renderBanner();
    this.view.emitChange();
  }

  /**
   * Show the controls. `watched`: the view already shows the whole battle (it was watched
   * live to the end), so it stays as it is until a replay control is used; otherwise the whole
   * log is applied now.
   */
  attach({ watched = false } = {}) {
    $("replay").hidden = false;
    const position = $("replay-position");
    position.max = String(this.events.length);
    $("replay-toggle").addEventListener("click", () => (this.playing ? this.pause() : this.play()));
    $("replay-end").addEventListener("click", () => this.seek(this.events.length));
    $("replay-speed").addEventListener("change", (e) => {
      this.speed = Number(e.target.value) || 1;
    });
    this.speed = Number($("replay-speed").value) || 1;
    position.addEventListener("input", () => {
      const target = Number(position.value); // read before pause() redraws the slider
      const wasPlaying = this.playing;
      this.pause();
      this.seek(target);
      if (wasPlaying && this.index < this.events.length) this.play();
    });
    if (watched) {
      this.index = this.events.length;
      this.virtualNow = this.events.length ? this.events[this.events.length - 1].at : Date.now();
      this.renderControls();
    } else {
      this.activate();
      this.seek(this.events.length);
    }
  }

  /** Show the battle as it was after the first `index` events. */
  seek(index) {
    this.activate();
    const target = Math.max(0, Math.min(this.events.length, index));
    if (target < this.index) {
      this.view.reset();
      this.index = 0;
    }
    while (this.index < target) this.view.apply(this.events[this.index++]);
    if (this.index > 0) this.virtualNow = this.events[this.index - 1].at;
    else if (this.events.length) this.virtualNow = this.events[0].at;
    if (this.index >= this.events.length) this.pause();
    this.view.renderCountdown();
    this.renderControls();
  }

  play() {
    this.activate();
    if (this.index >= this.events.length) this.seek(0); // from the start again
    this.playing = true;
    this.lastTick = performance.now();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.renderControls();
  }

  pause() {
    this.playing = false;
    clearInterval(this.timer);
    this.timer = null;
    this.renderControls();
  }

  tick() {
    const now = performance.now();
    this.virtualNow += (now - this.lastTick) * this.speed;
    this.lastTick = now;
    const next = this.events[this.index];
    if (next && next.at - this.virtualNow > MAX_GAP_MS) this.virtualNow = next.at - MAX_GAP_MS;
    while (this.index < this.events.length && this.events[this.index].at <= this.virtualNow) {
      this.view.apply(this.events[this.index++]);
    }
    this.view.renderCountdown();
    if (this.index >= this.events.length) this.pause();
    else this.renderControls();
  }

  renderControls() {
    const toggle = $("replay-toggle");
    const atEnd = this.index >= this.events.length;
    toggle.textContent = this.playing ? "Pause" : atEnd ? "Replay from the start" : "Play";
    toggle.setAttribute("aria-pressed", this.playing ? "true" : "false");
    $("replay-position").value = String(this.index);
    $("replay-progress").textContent = `Event ${this.index} of ${this.events.length}`;
    document.body.dataset.replay = this.playing ? "playing" : atEnd ? "ended" : "paused";
  }
}
