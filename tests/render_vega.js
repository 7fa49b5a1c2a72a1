// Render the first plot of a `dvc plots show` page the way a browser would, offline: run the page's inline scripts
// (the vendored Vega, Vega-Lite, Vega-Embed), compile the plot's Vega-Lite spec and print the SVG's texts as JSON.
const fs = require('fs');
const page = fs.readFileSync(process.argv[2], 'utf8');
for (const m of page.matchAll(/<script>([\s\S]*?)<\/script>/g)) {
  new Function('exports', 'module', 'define', m[1])(undefined, undefined, undefined);  // UMD builds: set globals
}
const spec = JSON.parse(page.match(/var spec = (\{[\s\S]*?\});\s*vegaEmbed/)[1]);
new vega.View(vega.parse(vegaLite.compile(spec).spec), {renderer: 'none'}).toSVG().then(svg => {
  const texts = (svg.match(/<text[^>]*>[^<]*<\/text>/g) || []).map(t => t.replace(/<[^>]*>/g, ''));
  console.log(JSON.stringify({lines: (svg.match(/<path/g) || []).length, texts: [...new Set(texts)]}));
});
