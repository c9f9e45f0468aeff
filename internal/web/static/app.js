// Enhancements for the recipient pages; everything works without them.
(function () {
  'use strict';

  function words(s) {
    if (s < 60) return s + (s === 1 ? ' second' : ' seconds');
    var m = Math.ceil(s / 60);
    return m + (m === 1 ? ' minute' : ' minutes');
  }

  // Resend countdown: the server says how long to wait (its throttle); the
  // button stays disabled until then, and the end is announced once.
  document.querySelectorAll('[data-countdown]').forEach(function (el) {
    var form = el.closest('form');
    var button = form && form.querySelector('button[type=submit]');
    var text = el.querySelector('[data-countdown-text]');
    var done = form && form.querySelector('[data-countdown-done]');
    var end = Date.now() + 1000 * parseInt(el.getAttribute('data-countdown'), 10);
    if (!button || !text || isNaN(end)) return;
    button.disabled = true;
    var timer = setInterval(tick, 1000);
    function tick() {
      var left = Math.ceil((end - Date.now()) / 1000);
      if (left > 0) {
        text.textContent = words(left);
        return;
      }
      clearInterval(timer);
      el.textContent = 'You can ask for a new code now.';
      if (done) done.textContent = 'You can ask for a new code now.';
      button.disabled = false;
    }
    tick();
  });

  // Code input: accept pasted codes with spaces or dashes, keep as many
  // digits as the link's codes have (the server's maxlength says how many).
  var code = document.getElementById('code');
  if (code) {
    var length = parseInt(code.getAttribute('maxlength'), 10) || 10;
    code.removeAttribute('maxlength');
    code.addEventListener('input', function () {
      var digits = code.value.replace(/\D/g, '').slice(0, length);
      if (digits !== code.value) code.value = digits;
    });
  }

  // One submission per form: a second click would spend another attempt.
  document.querySelectorAll('form').forEach(function (form) {
    form.addEventListener('submit', function (ev) {
      if (form.getAttribute('data-sent')) {
        ev.preventDefault();
        return;
      }
      form.setAttribute('data-sent', '1');
      var b = form.querySelector('button[type=submit]');
      if (b) b.setAttribute('aria-disabled', 'true');
    });
  });
})();
