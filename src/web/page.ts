/** The dashboard's one HTML page; the data comes from /api/overview, drawn by assets/dashboard.js. */
export const dashboardHtml = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ruawatch</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="assets/uPlot.min.css">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin: 0 0 .2rem; } h2 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; border-bottom: 1px solid #ddd; }
  table { border-collapse: collapse; width: 100%; font-size: 13px; } th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #eee; vertical-align: top; }
  th { background: #f5f5f5; } tr.clickable { cursor: pointer; } tr.clickable:hover { background: #eef4fb; }
  .charts { display: grid; grid-template-columns: 1fr; gap: 1rem; }
  .sev { padding: 0 .4rem; border-radius: 3px; color: #fff; } .sev-critical { background: #d32f2f; } .sev-warning { background: #f9a825; color: #222; } .sev-info { background: #1976d2; }
  .trend-up { color: #2e7d32; } .trend-down { color: #d32f2f; } .trend-new { color: #6a1b9a; } .empty, #status { color: #666; } .error { color: #d32f2f; }
  #detail:not(:empty) { border: 1px solid #ccc; padding: .5rem 1rem 1rem; margin-top: 1rem; background: #fafafa; }
  .scroll { max-height: 420px; overflow: auto; }
  .chart-title { font-size: 1rem; margin: .5rem 0; text-align: center; }
</style>
</head>
<body>
<h1>ruawatch</h1>
<p id="status">Loading…</p>
<div class="charts"><div id="pass-chart"></div><div id="tls-chart"></div></div>
<h2>Open alerts</h2><div id="alerts-open"></div>
<h2>Notifications</h2><div id="notifications"></div>
<h2 id="sources-title">Sources</h2><div id="sources" class="scroll"></div>
<h2>Recent reports</h2><div id="reports" class="scroll"></div><div id="detail"></div>
<h2>Recently resolved alerts</h2><div id="alerts-recent"></div>
<script src="assets/uPlot.iife.min.js"></script>
<script type="module" src="assets/dashboard.js"></script>
</body>
</html>
`;
