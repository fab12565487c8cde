// Throughput and field accuracy of metascraper on the metadata-peers corpus,
// beside BenchmarkCollectPeers (internal/metadata/collect/bench_test.go).
// Not run in CI; see run.sh.
//
//   node bench.mjs [--pages 630] [--workers 16] [--expect expect.json] [--corpus DIR]
//
// A loopback server (127.0.0.1, a free port) serves every case's files from
// memory with the recorded content types; each worker fetches a page over
// HTTP, decodes it (charset from the Content-Type header, else the
// <meta> prescan of the first 1024 bytes, else UTF-8, as browsers and our
// collector do) and runs metascraper on it with the case's request URL.
//
// Accuracy: expect.json is written by
//   PEDAL_PEERS_EXPECT=$PWD/expect.json go test -run TestPeerAgreementBySource ./internal/metadata/extract/
// and holds, per case, request URL and field, the peer's expectation already
// mapped and normalised exactly as the Go side compares it, and the name of
// the normalisation to apply to metascraper's value. metascraper's title,
// description, url, image and publisher stand for title, description,
// canonical_url, image and site_name.

import http from 'node:http'
import fs from 'node:fs'
import path from 'node:path'
import os from 'node:os'
import { fileURLToPath } from 'node:url'

import createMetascraper from 'metascraper'
import title from 'metascraper-title'
import description from 'metascraper-description'
import murl from 'metascraper-url'
import image from 'metascraper-image'
import publisher from 'metascraper-publisher'
import author from 'metascraper-author'
import date from 'metascraper-date'
import lang from 'metascraper-lang'
import logo from 'metascraper-logo'

const here = path.dirname(fileURLToPath(import.meta.url))

function arg (name, def) {
  const i = process.argv.indexOf('--' + name)
  return i >= 0 ? process.argv[i + 1] : def
}
const corpus = arg('corpus', path.join(here, '../../../shared/testdata/metadata-peers'))
const totalPages = Number(arg('pages', 630))
const workers = Number(arg('workers', 16))
const expectFile = arg('expect', path.join(here, 'expect.json'))

const metascraper = createMetascraper([
  title(), description(), murl(), image(), publisher(), author(), date(), lang(), logo()
])

// ---- corpus --------------------------------------------------------------

if (!fs.existsSync(path.join(corpus, 'index.json'))) {
  console.error(`corpus not found at ${corpus}`)
  process.exit(2)
}
const index = JSON.parse(fs.readFileSync(path.join(corpus, 'index.json'), 'utf8'))
const resources = new Map() // "/<n>/<path>" -> {contentType, body}
const pages = [] // {id, path, requestURL}
const byID = new Map()
let corpusBytes = 0
index.forEach((row, n) => {
  const dir = path.join(corpus, row.id)
  const pc = JSON.parse(fs.readFileSync(path.join(dir, 'case.json'), 'utf8'))
  let p = '/page'
  if (pc.request_url) p = new URL(pc.request_url).pathname || '/'
  const prefix = `/${n}`
  const serve = pc.serve || {}
  if (!serve.resources || serve.resources.length === 0) {
    resources.set(prefix + p, { contentType: serve.content_type, body: fs.readFileSync(path.join(dir, serve.body_file)) })
  }
  for (const r of serve.resources || []) {
    resources.set(prefix + r.path, { contentType: r.content_type, body: fs.readFileSync(path.join(dir, r.file)) })
  }
  if (!resources.has(prefix + p)) throw new Error(`${row.id}: nothing at ${p}`)
  corpusBytes += resources.get(prefix + p).body.length
  const page = { id: row.id, path: prefix + p, requestURL: pc.request_url || 'https://peer.example/page' }
  pages.push(page)
  byID.set(row.id, page)
})

const server = http.createServer((req, res) => {
  const r = resources.get(new URL(req.url, 'http://x').pathname)
  if (!r) {
    res.writeHead(404)
    res.end()
    return
  }
  const h = {}
  if (r.contentType) h['content-type'] = r.contentType
  res.writeHead(200, h)
  res.end(r.body)
})
// No idle timeout: a server closing a kept-alive socket just as the client
// reuses it makes the request fail with ECONNRESET.
server.keepAliveTimeout = 0
await new Promise(resolve => server.listen(0, '127.0.0.1', resolve))
const origin = `http://127.0.0.1:${server.address().port}`
const agent = new http.Agent({ keepAlive: true, maxSockets: workers })

// ---- fetch + decode + metascraper ------------------------------------------

function get (p) {
  return new Promise((resolve, reject) => {
    http.get(origin + p, { agent }, res => {
      const chunks = []
      res.on('data', c => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, contentType: res.headers['content-type'] || '', body: Buffer.concat(chunks) }))
      res.on('error', reject)
    }).on('error', reject)
  })
}

function charsetOf (contentType, body) {
  const m = /charset\s*=\s*["']?([\w-]+)/i.exec(contentType)
  if (m) return m[1]
  if (body[0] === 0xef && body[1] === 0xbb && body[2] === 0xbf) return 'utf-8'
  const head = body.subarray(0, 1024).toString('latin1')
  const meta = /<meta[^>]+charset\s*=\s*["']?([\w-]+)/i.exec(head)
  return meta ? meta[1] : 'utf-8'
}

function decode (contentType, body) {
  let label = charsetOf(contentType, body)
  try {
    return new TextDecoder(label).decode(body)
  } catch {
    label = 'utf-8'
    return new TextDecoder(label).decode(body)
  }
}

async function scrape (page, url) {
  const r = await get(page.path)
  if (r.status !== 200) throw new Error(`${page.id}: HTTP ${r.status}`)
  // validateUrl off: metascraper refuses reserved names such as peer.example.
  return metascraper({ html: decode(r.contentType, r.body), url: url || page.requestURL, validateUrl: false })
}

// ---- accuracy --------------------------------------------------------------

const typographic = s => s.replace(/[’‘]/g, "'").replace(/[“”]/g, '"').replace(/…/g, '...')
const looseURL = s => s.split('#')[0].replace(/\/$/, '')
const norms = { typographic, looseURL, '': s => s }
const ours = { title: 'title', description: 'description', canonical_url: 'url', image: 'image', site_name: 'publisher' }
const fields = Object.keys(ours)

let accuracy = null
if (fs.existsSync(expectFile)) {
  const expectations = JSON.parse(fs.readFileSync(expectFile, 'utf8'))
  const results = new Map() // id + base -> metadata
  const tally = {} // source -> field -> {ok, n, goOK}
  const misses = []
  for (const e of expectations) {
    const key = e.id + '\x00' + e.base
    if (!results.has(key)) results.set(key, await scrape(byID.get(e.id), e.base))
    const md = results.get(key)
    const got = norms[e.norm](md[ours[e.field]] ?? '')
    const t = ((tally[e.source] ??= {})[e.field] ??= { ok: 0, n: 0, goOK: 0 })
    t.n++
    if (e.agree) t.goOK++
    if (got === e.want) t.ok++
    else misses.push(`${e.id} ${e.field}: want ${JSON.stringify(e.want)} got ${JSON.stringify(got)}`)
  }
  accuracy = { tally, misses }
} else {
  console.error(`no ${expectFile}: accuracy skipped (see the header of bench.mjs)`)
}

// ---- throughput ------------------------------------------------------------

async function run (n) {
  let next = 0
  let bytes = 0
  const start = process.hrtime.bigint()
  await Promise.all(Array.from({ length: workers }, async () => {
    for (let i = next++; i < n; i = next++) {
      const page = pages[i % pages.length]
      await scrape(page)
      bytes += resources.get(page.path).body.length
    }
  }))
  const secs = Number(process.hrtime.bigint() - start) / 1e9
  return { n, secs, bytes }
}

await run(pages.length) // warm-up: one pass over the corpus
const r = await run(totalPages)
server.close()
agent.destroy()

console.log(`metascraper ${JSON.parse(fs.readFileSync(path.join(here, 'node_modules/metascraper/package.json'))).version}, node ${process.version}, ${os.cpus().length} CPUs`)
console.log(`corpus: ${pages.length} pages, ${(corpusBytes / 1e6).toFixed(1)} MB; ${workers} concurrent requests`)
console.log(`throughput: ${r.n} pages in ${r.secs.toFixed(2)} s = ${(r.n / r.secs).toFixed(1)} pages/s, ${(r.bytes / r.secs / 1e6).toFixed(2)} MB/s`)
if (accuracy) {
  const pad = (s, w) => String(s).padStart(w)
  console.log('\nfield-level agreement with the peers\' expectations, metascraper (ours in brackets):')
  console.log('source'.padEnd(14) + fields.map(f => pad(f, 22)).join(''))
  const all = {}
  for (const [source, byField] of [...Object.entries(accuracy.tally), ['all', null]]) {
    let line = source.padEnd(14)
    for (const f of fields) {
      let t = byField ? byField[f] : all[f]
      if (byField && t) {
        const a = (all[f] ??= { ok: 0, n: 0, goOK: 0 })
        a.ok += t.ok; a.n += t.n; a.goOK += t.goOK
      }
      if (!t || t.n === 0) { line += pad('-', 22); continue }
      line += pad(`${t.ok}/${t.n} ${(100 * t.ok / t.n).toFixed(0)}% (${(100 * t.goOK / t.n).toFixed(0)}%)`, 22)
    }
    console.log(line)
  }
  if (process.argv.includes('--misses')) {
    console.log('\nmetascraper disagreements:')
    for (const m of accuracy.misses) console.log('  ' + m.slice(0, 300))
  }
}
