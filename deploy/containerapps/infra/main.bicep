// Moorage on Azure Container Apps (azd: `azd up` in deploy/containerapps).
// Two backends, as in the Helm chart:
//   backend = 'dts'     workers on an Azure Durable Task Scheduler (created here), managed identity, the
//                       azure-durabletask-scheduler KEDA scale rule; agents appear in the scheduler's dashboard.
//   backend = 'sidecar' the Moorage sidecar app (gateway, dashboard) on PostgreSQL (postgresUrl), bearer-token auth
//                       between workers and sidecar, workers scaled by KEDA's metrics-api rule on the sidecar's /scale.
// Workers scale to zero in both: an agent waiting for a human costs nothing.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; a hash of it names the resources')
param environmentName string

@minLength(1)
@description('Region of every resource')
param location string

@description('Your principal id (azd sets it): gets the Durable Task Data Contributor role to use the DTS dashboard')
param principalId string = ''

@allowed(['dts', 'sidecar'])
param backend string = 'dts'

@secure()
@description('backend sidecar: postgresql://user:password@host:5432/db (the sidecar replicas share it)')
param postgresUrl string = ''

@secure()
@description('backend sidecar: the bearer token workers and clients present; empty: one is generated')
param authToken string = ''

param sidecarExists bool = false
param workerExists bool = false
param workerMaxReplicas int = 10
param taskHubName string = 'default'

@minValue(0)
@maxValue(64)
@description('backend sidecar: transactions each replica runs at once (MOORAGE_STORE_CONNECTIONS); 0: the sidecar default, 3. A managed database ~1 ms away wants 8-16 (docs/scale-out.md)')
param storeConnections int = 0

var tags = { 'azd-env-name': environmentName }
var token = toLower(uniqueString(subscription().id, environmentName, location))

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-moorage-${environmentName}'
  location: location
  tags: tags
}

module resources 'resources.bicep' = {
  name: 'moorage-resources'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: token
    principalId: principalId
    backend: backend
    postgresUrl: postgresUrl
    authToken: !empty(authToken) ? authToken : '${uniqueString(rg.id, environmentName, 'moorage-auth')}${guid(rg.id, environmentName)}'
    sidecarExists: sidecarExists
    workerExists: workerExists
    workerMaxReplicas: workerMaxReplicas
    taskHubName: taskHubName
    storeConnections: storeConnections
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = resources.outputs.registryLoginServer
output MOORAGE_GATEWAY_URL string = resources.outputs.gatewayUrl
output DTS_ENDPOINT string = resources.outputs.dtsEndpoint
output DTS_TASKHUB string = taskHubName
