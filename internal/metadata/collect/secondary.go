package collect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/gif"  // image probes
	_ "image/jpeg" // image probes
	_ "image/png"  // image probes
	"io"
	"net/http"
	"sync"

	_ "golang.org/x/image/webp" // image probes
)

// fetchOEmbed fetches the page's oEmbed endpoint and returns its JSON object,
// compacted.
func (c *Collector) fetchOEmbed(ctx context.Context, rawURL string) (json.RawMessage, error) {
	raw, err := c.fetchOEmbedRaw(ctx, rawURL)
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	}
	c.metrics.probes.WithLabelValues("oembed", outcome).Inc()
	return raw, err
}

func (c *Collector) fetchOEmbedRaw(ctx context.Context, rawURL string) (json.RawMessage, error) {
	resp, done, err := c.get(ctx, rawURL, "application/json", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if err := statusError(resp); err != nil {
		done(err)
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxOEmbedBytes+1))
	if err != nil {
		e := classify(err)
		done(e)
		return nil, e
	}
	done(nil)
	if len(b) > maxOEmbedBytes {
		return nil, fmt.Errorf("oembed response larger than %d bytes", maxOEmbedBytes)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("oembed response is not a JSON object: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// probeImages fills in the size of the first images that lack one, by
// decoding the header of each (at most maxProbeBytes of it), concurrently.
func (c *Collector) probeImages(ctx context.Context, imgs []Image) {
	var wg sync.WaitGroup
	n := 0
	for i := range imgs {
		if imgs[i].Width > 0 && imgs[i].Height > 0 {
			continue
		}
		if n++; n > maxProbes {
			break
		}
		wg.Go(func() {
			cfg, err := c.probe(ctx, imgs[i].URL)
			outcome := "ok"
			if err != nil {
				outcome = "failed"
				c.log.DebugContext(ctx, "image probe failed", "url", imgs[i].URL, "err", err)
			} else {
				imgs[i].Width, imgs[i].Height = cfg.Width, cfg.Height
			}
			c.metrics.probes.WithLabelValues("image", outcome).Inc()
		})
	}
	wg.Wait()
}

func (c *Collector) probe(ctx context.Context, rawURL string) (image.Config, error) {
	h := http.Header{"Range": {fmt.Sprintf("bytes=0-%d", maxProbeBytes-1)}}
	resp, done, err := c.get(ctx, rawURL, "image/*", h)
	if err != nil {
		return image.Config{}, err
	}
	defer resp.Body.Close()
	if err := statusError(resp); err != nil {
		done(err)
		return image.Config{}, err
	}
	done(nil)
	cfg, _, err := image.DecodeConfig(io.LimitReader(resp.Body, maxProbeBytes))
	if err != nil {
		return image.Config{}, errors.Join(errors.New("image header not recognised"), err)
	}
	return cfg, nil
}
