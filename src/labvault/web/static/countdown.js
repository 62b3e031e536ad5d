// The 72-hour clocks of the incident pages: each <span class="countdown" data-deadline="ISO">
// shows the time left (H:MM:SS, a minus sign once past) and is updated every second. The server
// printed the same value: without this script the page is right when it was served.
"use strict";
(function () {
  function pad(n) { return n < 10 ? "0" + n : String(n); }
  function left(deadline, now) {
    let s = Math.trunc((deadline - now) / 1000);
    const sign = s < 0 ? "-" : "";
    s = Math.abs(s);
    return sign + pad(Math.floor(s / 3600)) + ":" + pad(Math.floor((s % 3600) / 60)) + ":" + pad(s % 60);
  }
  function tick() {
    const now = Date.now();
    document.querySelectorAll(".countdown[data-deadline]").forEach(function (el) {
      const deadline = Date.parse(el.getAttribute("data-deadline"));
      if (isNaN(deadline)) { return; }
      el.textContent = left(deadline, now);
      el.classList.toggle("late", deadline < now);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    tick();
    window.setInterval(tick, 1000);
  });
})();
