// libraries: the standard packages small programs commonly use beyond fmt, for `cargo xtask
// hot-functions` (their functions join the list only in binaries that link them; see
// RATIONALE.md "Why split a module…"): encoding/json both ways, regexp, hashes and hex, base64,
// bytes.Buffer, bufio.Scanner, sort.Slice, errors.As, panic and recover, time formatting and
// parsing, strconv's floats, fmt.Sscanf, filepath and url. It must build with every supported Go
// (no generics packages).
package main

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
)

type item struct {
	Name  string            `json:"name"`
	Count int               `json:"count,omitempty"`
	Tags  []string          `json:"tags"`
	Attrs map[string]string `json:"attrs"`
	Price float64           `json:"price"`
	OK    bool              `json:"ok"`
}

type codeErr struct{ code int }

func (e *codeErr) Error() string { return "code " + strconv.Itoa(e.code) }

func mayPanic() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("recovered: %v", r)
		}
	}()
	var m map[string]int
	m["x"] = 1
	return nil
}

func main() {
	items := []item{{"b", 2, []string{"x"}, map[string]string{"k": "v"}, 1.5, true}, {Name: "a"}}
	sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
	out, err := json.Marshal(items)
	fmt.Println(string(out), err)
	pretty, _ := json.MarshalIndent(map[string]interface{}{"n": 1, "s": []int{1, 2}}, "", "  ")
	fmt.Println(string(pretty))
	var back []item
	fmt.Println(json.Unmarshal(out, &back), len(back), back[1].Attrs["k"])
	var any interface{}
	fmt.Println(json.Unmarshal([]byte(`{"a":[1,"two",null,true,{"b":2.5}]}`), &any), any)

	re := regexp.MustCompile(`(\w+)@(\w+)\.com`)
	fmt.Println(re.MatchString("me@example.com"), re.FindStringSubmatch("you@site.com"),
		re.ReplaceAllString("a@b.com c@d.com", "<$1>"))

	sum := sha256.Sum256([]byte("hello"))
	m5 := md5.Sum([]byte("hello"))
	fmt.Println(hex.EncodeToString(sum[:]), fmt.Sprintf("%x", m5))
	enc := base64.StdEncoding.EncodeToString([]byte("hello"))
	dec, _ := base64.StdEncoding.DecodeString(enc)
	fmt.Println(enc, string(dec))

	var buf bytes.Buffer
	buf.WriteString("line one\nline two\n")
	fmt.Fprintf(&buf, "line %d\n", 3)
	sc := bufio.NewScanner(strings.NewReader(buf.String()))
	for sc.Scan() {
		words := strings.Fields(sc.Text())
		fmt.Println(len(words), strings.ToUpper(words[0]), unicode.IsDigit(rune(words[1][0])))
	}

	wrapped := fmt.Errorf("outer: %w", &codeErr{7})
	var ce *codeErr
	fmt.Println(errors.As(wrapped, &ce), ce.code, mayPanic())

	t, err := time.Parse("2006-01-02 15:04", "2024-03-05 06:07")
	fmt.Println(t.Format(time.RFC1123), t.Add(90*time.Minute).Format(time.Kitchen), err)
	f, _ := strconv.ParseFloat("3.25", 64)
	var a, b int
	n, _ := fmt.Sscanf("12 34", "%d %d", &a, &b)
	fmt.Println(f*2, n, a+b, strconv.FormatInt(255, 16))
	u, _ := url.Parse("https://example.com/a/b?q=1&r=two")
	fmt.Println(filepath.Join("a", "b", "../c.txt"), filepath.Ext("x.go"), u.Host, u.Query().Get("r"))
}
