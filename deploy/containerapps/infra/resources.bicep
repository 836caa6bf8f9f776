// The resource-group part of main.bicep: registry, identity, logs, the Container Apps environment, the scheduler
// (backend dts) or the sidecar app (backend sidecar), and the worker app.
param location string
param tags object
param resourceToken string
param principalId string
@allowed(['dts', 'sidecar'])
param backend string
@secure()
param postgresUrl string
@secure()
param authToken string
param sidecarExists bool
param workerExists bool
param workerMaxReplicas int
param taskHubName string
param storeConnections int

var useDts = backend == 'dts'
var acrPullRole = '7f951dda-4ed3-4680-a7ca-43fe172d538d'
var durableTaskDataContributorRole = '0ad04412-c4d5-4796-b79c-f76d14c8d402'
var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'
var probes = [
  { type: 'Startup', httpGet: { path: '/healthz', port: 9090 }, periodSeconds: 2, failureThreshold: 30 }
  { type: 'Liveness', httpGet: { path: '/healthz', port: 9090 }, periodSeconds: 10 }
  { type: 'Readiness', httpGet: { path: '/readyz', port: 9090 }, periodSeconds: 5 }
]

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-moorage-${resourceToken}'
  location: location
  tags: tags
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  name: 'crmoorage${resourceToken}'
  location: location
  tags: tags
  sku: { name: 'Basic' }
  properties: { adminUserEnabled: false }
}

resource acrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, identity.id, acrPullRole)
  scope: registry
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPullRole)
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-moorage-${resourceToken}'
  location: location
  tags: tags
  properties: { sku: { name: 'PerGB2018' }, retentionInDays: 30 }
}

resource env 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: 'cae-moorage-${resourceToken}'
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

// -- backend dts: the scheduler, its task hub, and who may use them ---------------------------------------------------
resource scheduler 'Microsoft.DurableTask/schedulers@2025-11-01' = if (useDts) {
  name: 'dts-moorage-${resourceToken}'
  location: location
  tags: tags
  properties: {
    sku: { name: 'Consumption' }
    ipAllowlist: ['0.0.0.0/0']
  }
}

resource taskHub 'Microsoft.DurableTask/schedulers/taskHubs@2025-11-01' = if (useDts) {
  parent: scheduler
  name: taskHubName
}

resource workerOnDts 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useDts) {
  name: guid(resourceGroup().id, identity.id, durableTaskDataContributorRole)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributorRole)
  }
}

resource youOnDts 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useDts && !empty(principalId)) {
  name: guid(resourceGroup().id, principalId, durableTaskDataContributorRole)
  properties: {
    principalId: principalId
    principalType: 'User'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributorRole)
  }
}

var dtsEndpoint = useDts ? scheduler.properties.endpoint : ''
var sidecarName = 'ca-moorage-sidecar-${resourceToken}'

// -- backend sidecar: the Moorage sidecar with its gateway and dashboard ----------------------------------------------
resource sidecar 'Microsoft.App/containerApps@2024-03-01' = if (!useDts) {
  name: sidecarName
  location: location
  tags: union(tags, { 'azd-service-name': 'sidecar' })
  identity: { type: 'UserAssigned', userAssignedIdentities: { '${identity.id}': {} } }
  dependsOn: [acrPull]
  properties: {
    managedEnvironmentId: env.id
    configuration: {
      activeRevisionsMode: 'Single'
      registries: [{ server: registry.properties.loginServer, identity: identity.id }]
      secrets: [
        { name: 'auth-tokens', value: authToken }
        { name: 'postgres-url', value: postgresUrl }
      ]
      ingress: {
        external: true          // the gateway's HTTP API (bearer token required)
        targetPort: 7071
        transport: 'auto'
        additionalPortMappings: [
          { external: false, targetPort: 8080, exposedPort: 8080 }   // Durable Task gRPC, for workers
          { external: false, targetPort: 9090, exposedPort: 9090 }   // /metrics, /readyz, /scale
          { external: false, targetPort: 8082, exposedPort: 8082 }   // dashboard (port-forward or internal)
        ]
      }
    }
    template: {
      containers: [{
        name: 'sidecar'
        image: sidecarExists ? '${registry.properties.loginServer}/moorage/sidecar:latest' : placeholderImage
        args: ['--port', '8080', '--http-port', '7071', '--dashboard-port', '8082', '--metrics-port', '9090']
        env: concat([
          { name: 'MOORAGE_STORE', secretRef: 'postgres-url' }
          { name: 'MOORAGE_AUTH_TOKEN_FILE', value: '/run/secrets/moorage/tokens' }
        ], storeConnections > 0 ? [{ name: 'MOORAGE_STORE_CONNECTIONS', value: string(storeConnections) }] : [])
        volumeMounts: [{ volumeName: 'auth', mountPath: '/run/secrets/moorage' }]
        probes: sidecarExists ? probes : []   // the placeholder image of the first provision has no probes
        resources: { cpu: json('0.5'), memory: '1Gi' }
      }]
      volumes: [{ name: 'auth', storageType: 'Secret', secrets: [{ secretRef: 'auth-tokens', path: 'tokens' }] }]
      scale: { minReplicas: 1, maxReplicas: 3 }   // stateless replicas on one PostgreSQL database
    }
  }
}

// -- the worker: your agents (the example Joker by default), scaled to zero when idle ---------------------------------
var dtsRules = [for kind in ['Orchestration', 'Activity', 'Entity']: {
  name: 'dts-${toLower(kind)}'
  custom: {
    type: 'azure-durabletask-scheduler'
    identity: identity.id
    metadata: {
      endpoint: dtsEndpoint
      taskhubName: taskHubName
      workItemType: kind
      maxConcurrentWorkItemsCount: '10'
    }
  }
}]
var sidecarRules = [{
  name: 'moorage-pending'
  custom: {
    type: 'metrics-api'
    metadata: {
      url: 'http://${sidecarName}:9090/scale'
      valueLocation: 'pending'
      targetValue: '10'
      activationTargetValue: '0'
    }
  }
}]
var connectionString = useDts
  ? 'Endpoint=${dtsEndpoint};Authentication=ManagedIdentity;ClientID=${identity.properties.clientId};TaskHub=${taskHubName}'
  : 'Endpoint=http://${sidecarName}:8080;Authentication=None;TaskHub=${taskHubName}'

resource worker 'Microsoft.App/containerApps@2024-03-01' = {
  name: 'ca-moorage-worker-${resourceToken}'
  location: location
  tags: union(tags, { 'azd-service-name': 'worker' })
  identity: { type: 'UserAssigned', userAssignedIdentities: { '${identity.id}': {} } }
  dependsOn: [acrPull]
  properties: {
    managedEnvironmentId: env.id
    configuration: {
      activeRevisionsMode: 'Single'
      registries: [{ server: registry.properties.loginServer, identity: identity.id }]
      secrets: useDts ? [] : [{ name: 'auth-token', value: authToken }]
    }
    template: {
      terminationGracePeriodSeconds: 60
      containers: [{
        name: 'worker'
        image: workerExists ? '${registry.properties.loginServer}/moorage/worker:latest' : placeholderImage
        env: concat([
          { name: 'DURABLE_TASK_SCHEDULER_CONNECTION_STRING', value: connectionString }
          { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
          { name: 'MOORAGE_GRACE_SECONDS', value: '50' }
        ], useDts ? [] : [{ name: 'MOORAGE_TOKEN', secretRef: 'auth-token' }])
        probes: workerExists ? probes : []
        resources: { cpu: json('0.5'), memory: '1Gi' }
      }]
      scale: {
        minReplicas: 0
        maxReplicas: workerMaxReplicas
        rules: useDts ? dtsRules : sidecarRules
      }
    }
  }
}

output registryLoginServer string = registry.properties.loginServer
output gatewayUrl string = useDts ? '' : 'https://${sidecar.properties.configuration.ingress.fqdn}'
output dtsEndpoint string = dtsEndpoint
