// Command gitops-verdicts says what GitOps tools conclude from recorded kubetune objects, with the
// tools' own libraries: kstatus (sigs.k8s.io/cli-utils, as Flux `wait` and `kubectl wait` use it),
// the chart's Argo CD health scripts run by gopher-lua the way Argo CD runs them, and the chart's Flux
// healthCheckExprs evaluated by cel-go with Flux's environment and order (RFC 0009).
//
// Usage: gitops-verdicts -argocd SCRIPT.lua -flux FILE OBJECT.json...
// Prints one JSON object per input object: {"file", "kind", "kstatus", "argocd", "flux"}.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	lua "github.com/yuin/gopher-lua"
	"gopkg.in/yaml.v2"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// Verdict is what one tool concluded.
type Verdict struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// Result holds every tool's verdict on one object.
type Result struct {
	File    string  `json:"file"`
	Kind    string  `json:"kind"`
	KStatus Verdict `json:"kstatus"`
	ArgoCD  Verdict `json:"argocd"`
	Flux    Verdict `json:"flux"`
}

// HealthCheck is one entry of a Flux Kustomization's spec.healthCheckExprs.
type HealthCheck struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	InProgress string `yaml:"inProgress"`
	Failed     string `yaml:"failed"`
	Current    string `yaml:"current"`
}

func main() {
	argoScript := flag.String("argocd", "", "the Argo CD health script (Lua) of both kinds")
	fluxFile := flag.String("flux", "", "YAML list of Flux healthCheckExprs entries")
	flag.Parse()
	checks, err := loadFlux(*fluxFile)
	if err != nil {
		fail(err)
	}
	out := json.NewEncoder(os.Stdout)
	script, err := os.ReadFile(*argoScript)
	if err != nil {
		fail(err)
	}
	for _, path := range flag.Args() {
		result, err := judge(path, string(script), checks)
		if err != nil {
			fail(fmt.Errorf("%s: %w", path, err))
		}
		if err := out.Encode(result); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gitops-verdicts:", err)
	os.Exit(1)
}

func judge(path, script string, checks []HealthCheck) (*Result, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	// As the API machinery decodes: integers stay int64 (kstatus reads generations as int64).
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return nil, err
	}
	computed, err := status.Compute(u)
	if err != nil {
		return nil, fmt.Errorf("kstatus: %w", err)
	}
	argo, err := argoHealth(u, script)
	if err != nil {
		return nil, fmt.Errorf("argocd: %w", err)
	}
	flux, err := fluxStatus(u, checks)
	if err != nil {
		// Flux reports the error and keeps waiting (an object without a status, for one).
		flux = &Verdict{Status: "Error", Message: err.Error()}
	}
	return &Result{
		File:    path,
		Kind:    u.GetKind(),
		KStatus: Verdict{Status: computed.Status.String(), Message: computed.Message},
		ArgoCD:  *argo,
		Flux:    *flux,
	}, nil
}

// argoHealth runs the kind's script as Argo CD's util/lua does: the package, base and table libraries
// only (no string or math library), the object as the global `obj`, the returned table as the health.
func argoHealth(u *unstructured.Unstructured, script string) (*Verdict, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", toLua(l, u.Object))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	health := &Verdict{Status: lua.LVAsString(table.RawGetString("status")), Message: lua.LVAsString(table.RawGetString("message"))}
	switch health.Status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
		return health, nil
	}
	return nil, fmt.Errorf("invalid health status %q", health.Status)
}

// toLua converts decoded JSON as Argo CD's decodeValue does: objects and arrays become tables.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case map[string]any:
		table := l.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(l, item))
		}
		return table
	case []any:
		table := l.NewTable()
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	}
	return lua.LString(fmt.Sprint(value))
}

func loadFlux(path string) ([]HealthCheck, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var checks []HealthCheck
	if err := yaml.UnmarshalStrict(raw, &checks); err != nil {
		return nil, err
	}
	return checks, nil
}

// fluxStatus follows fluxcd/pkg runtime/cel StatusEvaluator: an unobserved generation is InProgress;
// then inProgress, failed, current in this order, the first true one wins; none true is InProgress.
func fluxStatus(u *unstructured.Unstructured, checks []HealthCheck) (*Verdict, error) {
	var check *HealthCheck
	for i := range checks {
		if checks[i].APIVersion == u.GetAPIVersion() && checks[i].Kind == u.GetKind() {
			check = &checks[i]
		}
	}
	if check == nil {
		return nil, fmt.Errorf("no healthCheckExprs entry for %s %s", u.GetAPIVersion(), u.GetKind())
	}
	observed, found, err := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	if err != nil {
		return nil, err
	}
	if found && observed != u.GetGeneration() {
		return &Verdict{Status: "InProgress", Message: "generation not observed"}, nil
	}
	for _, e := range []struct{ expr, status string }{
		{check.InProgress, "InProgress"}, {check.Failed, "Failed"}, {check.Current, "Current"},
	} {
		if e.expr == "" {
			continue
		}
		ok, err := evalBool(e.expr, u.Object)
		if err != nil {
			return nil, err
		}
		if ok {
			return &Verdict{Status: e.status, Message: strings.TrimSpace(e.expr)}, nil
		}
	}
	return &Verdict{Status: "InProgress", Message: "no expression matched"}, nil
}

// evalBool parses (does not compile) in Flux's CEL environment and evaluates over the object's fields.
func evalBool(expr string, obj map[string]any) (bool, error) {
	env, err := cel.NewEnv(
		cel.HomogeneousAggregateLiterals(),
		cel.EagerlyValidateDeclarations(true),
		cel.DefaultUTCTimeZone(true),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		ext.Strings(),
		ext.Sets(),
		ext.Encoders(),
	)
	if err != nil {
		return false, err
	}
	parsed, issues := env.Parse(expr)
	if issues != nil && issues.Err() != nil {
		return false, issues.Err()
	}
	program, err := env.Program(parsed, cel.EvalOptions(cel.OptOptimize), cel.InterruptCheckFrequency(100))
	if err != nil {
		return false, err
	}
	value, _, err := program.Eval(obj)
	if err != nil {
		return false, fmt.Errorf("%q: %w", expr, err)
	}
	result, ok := value.(types.Bool)
	if !ok {
		return false, fmt.Errorf("%q is not a boolean", expr)
	}
	return bool(result), nil
}
