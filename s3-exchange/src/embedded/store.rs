//! [`Store`]: `s3s-fs` with object listings completed the way S3 clients expect.
//!
//! `s3s-fs` lists objects without a storage class; AWS, MinIO and Ceph always send one, and
//! clients rely on it (`s3contents`, the Lab's S3 file browser, reads `StorageClass` of every
//! entry and fails on a listing without it). Everything else is passed through unchanged.

use async_trait::async_trait;
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput,
    CompleteMultipartUploadOutput, CopyObjectInput, CopyObjectOutput, CreateBucketInput,
    CreateBucketOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteBucketInput,
    DeleteBucketOutput, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput,
    DeleteObjectsOutput, GetBucketLocationInput, GetBucketLocationOutput, GetObjectInput,
    GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput, HeadObjectOutput,
    ListBucketsInput, ListBucketsOutput, ListObjectsInput, ListObjectsOutput, ListObjectsV2Input,
    ListObjectsV2Output, ListPartsInput, ListPartsOutput, Object, ObjectStorageClass,
    PutObjectInput, PutObjectOutput, UploadPartCopyInput, UploadPartCopyOutput, UploadPartInput,
    UploadPartOutput,
};
use s3s::{S3, S3Request, S3Response, S3Result};

/// The embedded store's objects: a directory tree served by `s3s-fs`.
#[derive(Debug)]
pub(crate) struct Store(pub(crate) s3s_fs::FileSystem);

fn with_storage_class(objects: Option<&mut Vec<Object>>) {
    for o in objects.into_iter().flatten() {
        o.storage_class
            .get_or_insert_with(|| ObjectStorageClass::from_static(ObjectStorageClass::STANDARD));
    }
}

// `#[async_trait]` must see the methods themselves, so the macro writes the whole impl.
macro_rules! store_impl {
    ($($op:ident($input:ty) -> $output:ty;)*) => {
        #[async_trait]
        impl S3 for Store {
            $(
                async fn $op(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    self.0.$op(req).await
                }
            )*

            async fn list_objects(
                &self,
                req: S3Request<ListObjectsInput>,
            ) -> S3Result<S3Response<ListObjectsOutput>> {
                let mut resp = self.0.list_objects(req).await?;
                with_storage_class(resp.output.contents.as_mut());
                Ok(resp)
            }

            async fn list_objects_v2(
                &self,
                req: S3Request<ListObjectsV2Input>,
            ) -> S3Result<S3Response<ListObjectsV2Output>> {
                let mut resp = self.0.list_objects_v2(req).await?;
                with_storage_class(resp.output.contents.as_mut());
                Ok(resp)
            }
        }
    };
}

store_impl! {
    create_bucket(CreateBucketInput) -> CreateBucketOutput;
    copy_object(CopyObjectInput) -> CopyObjectOutput;
    delete_bucket(DeleteBucketInput) -> DeleteBucketOutput;
    delete_object(DeleteObjectInput) -> DeleteObjectOutput;
    delete_objects(DeleteObjectsInput) -> DeleteObjectsOutput;
    get_bucket_location(GetBucketLocationInput) -> GetBucketLocationOutput;
    get_object(GetObjectInput) -> GetObjectOutput;
    head_bucket(HeadBucketInput) -> HeadBucketOutput;
    head_object(HeadObjectInput) -> HeadObjectOutput;
    list_buckets(ListBucketsInput) -> ListBucketsOutput;
    put_object(PutObjectInput) -> PutObjectOutput;
    create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput;
    upload_part(UploadPartInput) -> UploadPartOutput;
    upload_part_copy(UploadPartCopyInput) -> UploadPartCopyOutput;
    list_parts(ListPartsInput) -> ListPartsOutput;
    complete_multipart_upload(CompleteMultipartUploadInput) -> CompleteMultipartUploadOutput;
    abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput;
}
