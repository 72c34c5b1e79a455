{{/* Names. KubeRay appends suffixes (-serve-svc, -head-svc, -<hash>) to the RayService
name, so the full name is kept to 40 characters. */}}
{{- define "tiergate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "tiergate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tiergate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tiergate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tiergate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tiergate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tiergate
{{- end -}}

{{/* The Serve Service name: ours when customised, else the one KubeRay picks. */}}
{{- define "tiergate.serveServiceName" -}}
{{- if .Values.serveService.enabled -}}
{{- default (printf "%s-serve" (include "tiergate.fullname" .)) .Values.serveService.name -}}
{{- else -}}
{{- printf "%s-serve-svc" (include "tiergate.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "tiergate.apiKeysSecretName" -}}
{{- default (printf "%s-api-keys" (include "tiergate.fullname" .)) .Values.apiKeys.existingSecret -}}
{{- end -}}

{{/* A lower-case DNS label made from a file name: "Gateway Overview.json" -> "gateway-overview". */}}
{{- define "tiergate.fileSlug" -}}
{{- regexReplaceAll "[^a-z0-9]+" (base . | trimSuffix (ext .) | lower) "-" | trimAll "-" | trimPrefix "tiergate-" -}}
{{- end -}}

{{/* The pool mapping, as YAML: pool, else poolYaml, else the chart's deploy/pools/<poolFile>. */}}
{{- define "tiergate.pool" -}}
{{- $pool := dict -}}
{{- $source := "" -}}
{{- if .Values.pool -}}
{{- $pool = .Values.pool -}}
{{- $source = "values: pool" -}}
{{- else if .Values.poolYaml -}}
{{- $pool = fromYaml .Values.poolYaml -}}
{{- $source = "values: poolYaml" -}}
{{- else -}}
{{- $path := printf "files/pools/%s" .Values.poolFile -}}
{{- $text := .Files.Get $path -}}
{{- if not $text -}}
{{- $known := list -}}
{{- range $p, $_ := .Files.Glob "files/pools/*.y*ml" }}{{ $known = append $known (base $p) }}{{ end -}}
{{- fail (printf "poolFile %q is not shipped in the chart; pool files shipped: %s" .Values.poolFile (join ", " $known)) -}}
{{- end -}}
{{- $pool = fromYaml $text -}}
{{- $source = printf "poolFile: %s" .Values.poolFile -}}
{{- end -}}
{{- if hasKey $pool "Error" -}}
{{- fail (printf "the pool (%s) is not valid YAML: %s" $source (get $pool "Error")) -}}
{{- end -}}
{{- if not (kindIs "slice" $pool.models) -}}
{{- fail (printf "the pool (%s) has no list of models" $source) -}}
{{- end -}}
{{- $pool = deepCopy $pool -}}
{{- $auth := $pool.auth | default dict -}}
{{- if .Values.apiKeys.enabled -}}
{{- /* The chart owns auth: on, with the mounted keys file (TIERGATE_API_KEYS_FILE). */ -}}
{{- $_ := set $auth "enabled" true -}}
{{- $_ := set $pool "auth" $auth -}}
{{- else if and (ne (toString $auth.enabled) "false") (not $auth.keys_file) -}}
{{- fail (printf "apiKeys.enabled is false but the pool (%s) keeps the gateway's API-key auth on without a keys_file: enable apiKeys, set auth.keys_file in the pool, or set auth.enabled: false in the pool to run without keys" $source) -}}
{{- end -}}
{{- toYaml $pool -}}
{{- end -}}

{{/* serveConfigV2, as JSON (a YAML subset: numbers and strings survive unchanged). */}}
{{- define "tiergate.serveConfig" -}}
{{- $app := dict "name" .Values.serve.applicationName "route_prefix" .Values.serve.routePrefix "import_path" .Values.serve.importPath -}}
{{- $_ := set $app "args" (dict "pool_config" (include "tiergate.pool" . | fromYaml)) -}}
{{- with .Values.serve.runtimeEnv }}{{ $_ := set $app "runtime_env" . }}{{ end -}}
{{- $http := dict "host" "0.0.0.0" "port" .Values.serve.port -}}
{{- toPrettyJson (dict "proxy_location" .Values.serve.proxyLocation "http_options" $http "applications" (list $app)) -}}
{{- end -}}

{{- define "tiergate.image" -}}
{{- $root := index . 0 -}}
{{- $override := index . 1 | default dict -}}
{{- $variant := index . 2 -}}
{{- $tag := index $root.Values.image (printf "%sTag" $variant) | default (printf "%s-%s" $root.Chart.AppVersion $variant) -}}
{{- printf "%s:%s" (default $root.Values.image.repository $override.repository) (default $tag $override.tag) -}}
{{- end -}}

{{/*
A Ray pod template. Called with a dict:
  root: the chart context; group: the group's values; component: ray-head | ray-worker;
  groupName: the Ray group name; image: the image; head: true for the head.
*/}}
{{- define "tiergate.podTemplate" -}}
{{- $root := .root -}}
{{- $g := .group -}}
{{- $v := $root.Values -}}
metadata:
  labels:
    {{- /* No chart or app version here: a changed pod template makes KubeRay roll a new cluster. */}}
    {{- include "tiergate.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/part-of: tiergate
    app.kubernetes.io/component: {{ .component }}
    tiergate.io/ray-group: {{ .groupName }}
    {{- with $g.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $g.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with $v.serviceAccountName }}
  serviceAccountName: {{ . }}
  {{- end }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ .image }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      {{- with $v.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        {{- if .head }}
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        {{- end }}
        - {name: serve, containerPort: {{ $v.serve.port }}}
        - {name: metrics, containerPort: {{ $v.metrics.rayMetricsPort }}}
      {{- $resources := deepCopy ($g.resources | default dict) }}
      {{- if gt (int ($g.gpus | default 0)) 0 }}
      {{- $limits := $resources.limits | default dict }}
      {{- $_ := set $limits "nvidia.com/gpu" (int $g.gpus) }}
      {{- $_ := set $resources "limits" $limits }}
      {{- end }}
      {{- with $resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- $env := concat ($v.env | default list) ($g.env | default list) }}
      {{- if $v.apiKeys.enabled }}
      {{- $env = append $env (dict "name" "TIERGATE_API_KEYS_FILE" "value" (printf "%s/%s" (trimSuffix "/" $v.apiKeys.mountPath) $v.apiKeys.secretKey)) }}
      {{- end }}
      {{- with $env }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: dshm
          mountPath: /dev/shm
        {{- if $v.apiKeys.enabled }}
        - name: api-keys
          mountPath: {{ $v.apiKeys.mountPath }}
          readOnly: true
        {{- end }}
        {{- with concat ($v.volumeMounts | default list) ($g.volumeMounts | default list) }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: dshm
      emptyDir:
        medium: Memory
        {{- with $g.shmSize }}
        sizeLimit: {{ . }}
        {{- end }}
    {{- if $v.apiKeys.enabled }}
    - name: api-keys
      secret:
        secretName: {{ include "tiergate.apiKeysSecretName" $root }}
        defaultMode: 0440
    {{- end }}
    {{- with concat ($v.volumes | default list) ($g.volumes | default list) }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $g.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $g.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $g.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* rayStartParams: the metrics port, then the group's own (string values). */}}
{{- define "tiergate.rayStartParams" -}}
{{- $params := dict "metrics-export-port" (toString .root.Values.metrics.rayMetricsPort) -}}
{{- range $k, $val := .group.rayStartParams }}{{ $_ := set $params $k (toString $val) }}{{ end -}}
{{- toYaml $params -}}
{{- end -}}
