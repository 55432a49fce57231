// Loaded (blocking, tiny) before the page paints, so a chosen theme never
// flashes the other one first. app.js owns the toggle.
try {
  var theme = localStorage.getItem('hubcast.theme');
  if (theme === 'light' || theme === 'dark') document.documentElement.dataset.theme = theme;
} catch (e) { /* storage disabled: follow the OS */ }
