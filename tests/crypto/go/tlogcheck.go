// tlogcheck checks crypto's Merkle log output with Go's golang.org/x/mod/sumdb/tlog
// and sumdb/note, an implementation independent of ours. It reads one JSON
// request on stdin and writes one JSON answer on stdout; tests/crypto/test_tlog_go.py
// builds the request and judges the answer. GOPATH mode, standard library + x/mod only.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type inclusion struct {
	Index int64    `json:"index"`
	Size  int64    `json:"size"`
	Proof []string `json:"proof"`
	Root  string   `json:"root"`
	Leaf  string   `json:"leaf"`
}

type consistency struct {
	Old     int64    `json:"old"`
	New     int64    `json:"new"`
	OldRoot string   `json:"old_root"`
	NewRoot string   `json:"new_root"`
	Proof   []string `json:"proof"`
}

type request struct {
	Entries     []string          `json:"entries"` // base64 leaf entries, in order
	Sizes       []int64           `json:"sizes"`   // tree sizes to hash
	Inclusion   []inclusion       `json:"inclusion"`
	Consistency []consistency     `json:"consistency"`
	Tiles       map[string]string `json:"tiles"` // C2SP path -> base64 contents, for the full tree
	TileProofs  [][2]int64        `json:"tile_proofs"`
	TilePaths   [][3]int64        `json:"tile_paths"` // (level, index, width)
	Vkey        string            `json:"vkey"`
	Note        string            `json:"note"`
	Skey        string            `json:"skey"`
	SignText    string            `json:"sign_text"`
}

type answer struct {
	Roots          []string   `json:"roots"`
	Inclusion      []string   `json:"inclusion"`   // "ok" or the error
	Consistency    []string   `json:"consistency"` // "ok" or the error
	TileRecord     [][]string `json:"tile_record"` // ProveRecord over our tiles
	TileTree       [][]string `json:"tile_tree"`   // ProveTree over our tiles
	TilePaths      []string   `json:"tile_paths"`
	NoteText       string     `json:"note_text"`
	NoteError      string     `json:"note_error"`
	CheckpointSize int64      `json:"checkpoint_size"`
	CheckpointRoot string     `json:"checkpoint_root"`
	Signed         string     `json:"signed"`
}

func hash(s string) tlog.Hash {
	h, err := tlog.ParseHash(s)
	must(err)
	return h
}

func hashes(list []string) []tlog.Hash {
	out := make([]tlog.Hash, len(list))
	for i, s := range list {
		out[i] = hash(s)
	}
	return out
}

func strs(list []tlog.Hash) []string {
	out := make([]string, len(list))
	for i, h := range list {
		out[i] = h.String()
	}
	return out
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func verdict(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}

// storage keeps every stored hash, as tlog_test.go's testHashStorage does.
type storage []tlog.Hash

func (s storage) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		out[i] = s[x]
	}
	return out, nil
}

// tiles serves our C2SP tiles under Go's paths (tile/8/L/N...) for Go's TileHashReader.
type tiles map[string]string

func (t tiles) Height() int { return 8 }

func (t tiles) ReadTiles(list []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(list))
	for i, tile := range list {
		c2sp := strings.Replace(tile.Path(), "tile/8/", "tile/", 1)
		data, err := base64.StdEncoding.DecodeString(t[c2sp])
		if err != nil || len(data) < tile.W*tlog.HashSize {
			return nil, fmt.Errorf("tile %s missing or short", c2sp)
		}
		out[i] = data[:tile.W*tlog.HashSize]
	}
	return out, nil
}

func (t tiles) SaveTiles([]tlog.Tile, [][]byte) {}

func main() {
	var req request
	must(json.NewDecoder(os.Stdin).Decode(&req))
	var ans answer
	var store storage
	for i, e := range req.Entries {
		data, err := base64.StdEncoding.DecodeString(e)
		must(err)
		stored, err := tlog.StoredHashes(int64(i), data, store)
		must(err)
		store = append(store, stored...)
	}
	for _, size := range req.Sizes {
		root, err := tlog.TreeHash(size, store)
		must(err)
		ans.Roots = append(ans.Roots, root.String())
	}
	for _, c := range req.Inclusion {
		err := tlog.CheckRecord(hashes(c.Proof), c.Size, hash(c.Root), c.Index, hash(c.Leaf))
		ans.Inclusion = append(ans.Inclusion, verdict(err))
	}
	for _, c := range req.Consistency {
		err := tlog.CheckTree(hashes(c.Proof), c.New, hash(c.NewRoot), c.Old, hash(c.OldRoot))
		ans.Consistency = append(ans.Consistency, verdict(err))
	}
	size := int64(len(req.Entries))
	if len(req.Tiles) > 0 {
		root, err := tlog.TreeHash(size, store)
		must(err)
		reader := tlog.TileHashReader(tlog.Tree{N: size, Hash: root}, tiles(req.Tiles))
		for _, p := range req.TileProofs {
			record, err := tlog.ProveRecord(size, p[0], reader)
			must(err)
			tree, err := tlog.ProveTree(size, p[1], reader)
			must(err)
			ans.TileRecord = append(ans.TileRecord, strs(record))
			ans.TileTree = append(ans.TileTree, strs(tree))
		}
	}
	for _, t := range req.TilePaths {
		tile := tlog.Tile{H: 8, L: int(t[0]), N: t[1], W: int(t[2])}
		ans.TilePaths = append(ans.TilePaths, strings.Replace(tile.Path(), "tile/8/", "tile/", 1))
	}
	if req.Vkey != "" {
		verifier, err := note.NewVerifier(req.Vkey)
		must(err)
		n, err := note.Open([]byte(req.Note), note.VerifierList(verifier))
		if err != nil {
			ans.NoteError = err.Error()
		} else {
			ans.NoteText = n.Text
			lines := strings.SplitN(n.Text, "\n", 4)
			_, err := fmt.Sscanf(lines[1], "%d", &ans.CheckpointSize)
			must(err)
			ans.CheckpointRoot = hash(lines[2]).String()
		}
	}
	if req.Skey != "" {
		signer, err := note.NewSigner(req.Skey)
		must(err)
		signed, err := note.Sign(&note.Note{Text: req.SignText}, signer)
		must(err)
		ans.Signed = string(signed)
	}
	must(json.NewEncoder(os.Stdout).Encode(ans))
}
